#!/usr/bin/env bash
# Start S3 (SeaweedFS) -> buckets -> MLflow -> Prefect on 127.0.0.1; a healthy service is left alone.
# Usage: infra/local/up.sh [s3|mlflow|prefect ...]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$OVT_PYTHON" -m ovt.services up "$@"
