#!/usr/bin/env bash
# Install darkroom with its test dependencies into ./.venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/venv.sh test
exec .venv/bin/python -m pytest -n "${DARKROOM_TEST_JOBS:-2}" "$@"
