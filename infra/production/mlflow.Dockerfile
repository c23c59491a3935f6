# MLflow server image for infra/production/compose.yaml: the official image plus the S3 and PostgreSQL clients.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir boto3==1.43.117 psycopg2-binary==2.9.10
