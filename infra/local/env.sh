#!/usr/bin/env bash
# Print `export` lines that point a client shell at the local stack:  eval "$(infra/local/env.sh)"
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$OVT_PYTHON" -m ovt.services env
