#!/usr/bin/env bash
# One-shot, idempotent setup for a fresh machine (Debian 12, Python 3.11, 2 cores):
#   1. the Sweet Home 3D furniture package (the embedded 3D assets),
#   2. .venv from the exact lock (pip upgraded first: pip 23 cannot resolve dvc[s3] + aiobotocore in time),
#   3. .venv-blender for the Blender render backend (bpy pins numpy 1.26, so it cannot share .venv),
#   4. DVC's remote endpoint and keys from the services' settings (in the git-ignored .dvc/config.local).
# A second run only checks stamps. Set OVT_SKIP_BLENDER=1 to skip step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${OVT_PYTHON:-python3.11}
STATE=${OVT_STATE_DIR:-$ROOT/.state}
mkdir -p "$STATE"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
LOGF="$STATE/setup.log"
# pip's output goes to the log (the machine's pip config prints dozens of harmless "is ignored" lines); a failure
# still stops the setup, with the log's tail shown.
pipq() { "$@" >>"$LOGF" 2>&1 || { tail -30 "$LOGF" >&2; log "failed: $* (full log: $LOGF)"; exit 1; }; }

# --- 1. 3D assets: sweethome3d-furniture (820 CC0/CC-BY OBJ models) ---------------------------------------
if ls /usr/share/sweethome3d/furniture/*.sh3f >/dev/null 2>&1 || ls "$STATE"/debs/sweethome3d-furniture/usr/share/sweethome3d/furniture/*.sh3f >/dev/null 2>&1; then
  log "sweethome3d-furniture present"
elif [[ $(id -u) == 0 ]]; then
  log "installing sweethome3d-furniture (apt-get)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sweethome3d-furniture >/dev/null
else
  # Not root: unpack the .deb into the state folder instead (ovt.acquire searches there too).
  log "downloading sweethome3d-furniture into $STATE/debs (no root)"
  mkdir -p "$STATE/debs" && (cd "$STATE/debs" && apt-get download sweethome3d-furniture >/dev/null \
    && dpkg-deb -x sweethome3d-furniture_*.deb sweethome3d-furniture)
fi

# --- 2. main venv from the lock ------------------------------------------------------------------------------
stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }
want=$(stamp requirements.lock pyproject.toml)
if [[ -f .venv/.ovt-stamp && $(cat .venv/.ovt-stamp) == "$want" ]]; then
  log ".venv up to date"
else
  log "building .venv from requirements.lock (about 2 min)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  pipq .venv/bin/python -m pip install -q -U pip
  pipq .venv/bin/python -m pip install -q --no-deps -r requirements.lock
  pipq .venv/bin/python -m pip install -q --no-deps -e .
  pipq .venv/bin/python -m pip check
  echo "$want" > .venv/.ovt-stamp
fi

# --- 3. Blender venv ---------------------------------------------------------------------------------------------
if [[ ${OVT_SKIP_BLENDER:-0} == 1 ]]; then
  log "skipping .venv-blender (OVT_SKIP_BLENDER=1)"
else
  want_b=$(stamp requirements-blender.lock)
  if [[ -f .venv-blender/.ovt-stamp && $(cat .venv-blender/.ovt-stamp) == "$want_b" ]]; then
    log ".venv-blender up to date"
  else
    log "building .venv-blender (bpy 5.0.1, about 30 s)"
    [[ -x .venv-blender/bin/python ]] || "$PY" -m venv .venv-blender
    pipq .venv-blender/bin/python -m pip install -q -U pip
    pipq .venv-blender/bin/python -m pip install -q --no-deps -r requirements-blender.lock
    echo "$want_b" > .venv-blender/.ovt-stamp
  fi
fi

# --- 4. DVC remote: endpoint and keys from the same settings as the services (OVT_S3_PORT, AWS_*) ------------
# Written to .dvc/config.local (git-ignored by DVC): the keys never reach git; `ovt run` rewrites it every time.
DVC_NO_ANALYTICS=1 .venv/bin/python -m cli.app remote >/dev/null
log "ready"
