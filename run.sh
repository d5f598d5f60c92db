#!/usr/bin/env bash
# Quick start: install darkroom into ./.venv and serve on 127.0.0.1:8080 (data in ./darkroom-data).
set -euo pipefail
cd "$(dirname "$0")"
scripts/venv.sh ""
exec .venv/bin/darkroom serve "$@"
