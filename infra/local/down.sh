#!/usr/bin/env bash
# Stop Prefect -> MLflow -> S3, waiting for each process tree to exit. Data stays in the state folder.
# Usage: infra/local/down.sh [s3|mlflow|prefect ...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$OVT_PYTHON" -m ovt.services down "$@"
