#!/usr/bin/env bash
# Show pid, url, health and log of each service (--json for JSON, --check to exit 1 unless all healthy).
# Usage: infra/local/status.sh [s3|mlflow|prefect ...] [--json] [--check]
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$OVT_PYTHON" -m ovt.services status "$@"
