-- One PostgreSQL for both metadata stores (compose.yaml); each service owns its database.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
