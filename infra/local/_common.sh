# Sourced by up.sh / down.sh / status.sh / env.sh: find the repo and its venv, load infra/local/.env if present.
set -euo pipefail
OVT_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OVT_PYTHON="${OVT_PYTHON:-$OVT_REPO/.venv/bin/python}"
if [[ ! -x "$OVT_PYTHON" ]]; then
  echo "error: $OVT_PYTHON not found: create the venv first (see README.md) or set OVT_PYTHON" >&2
  exit 2
fi
# Local overrides (ports, state folder, credentials). Copy .env.example to .env; .env is never committed.
if [[ -f "$OVT_REPO/infra/local/.env" ]]; then
  set -a; source "$OVT_REPO/infra/local/.env"; set +a
fi
cd "$OVT_REPO"
