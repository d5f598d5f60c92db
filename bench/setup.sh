#!/usr/bin/env bash
# Install everything the benchmark needs into /tmp/bench (idempotent; safe to re-run).
#   - wrk and nginx (Debian packages)           -> /usr/bin/wrk, /usr/sbin/nginx
#   - Thumbor + libthumbor in its own venv       -> /tmp/bench/venv-thumbor
#   - sharp (npm)                                -> /tmp/bench/sharp/node_modules
#   - the workload images                        -> /tmp/bench/images
# darkroom itself, pyvips and Pillow come from darkroom's venv (DARKROOM_VENV, default /tmp/dv).
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/tmp/bench}
DV=${DARKROOM_VENV:-/tmp/dv}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY3=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*" >&2; }
mkdir -p "$BENCH_DIR"

# 1. wrk + nginx ------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
    # Debian starts nginx on port 80 after install; the bench runs its own instance.
    if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
    if [ -f /run/nginx.pid ]; then $SUDO kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
else
    log "wrk and nginx present"
fi

# 2. Thumbor venv -----------------------------------------------------------------------------
TV="$BENCH_DIR/venv-thumbor"
if [ -x "$TV/bin/thumbor" ] && "$TV/bin/python" -c 'import thumbor, libthumbor' 2>/dev/null; then
    log "thumbor venv present ($("$TV/bin/python" -c 'import thumbor; print(thumbor.__version__)'))"
else
    log "creating $TV (pip install thumbor libthumbor)"
    "$PY3" -m venv "$TV"
    "$TV/bin/pip" install -q --upgrade pip >/dev/null
    "$TV/bin/pip" install -q thumbor libthumbor
fi

# 3. sharp ------------------------------------------------------------------------------------
SD="$BENCH_DIR/sharp"
if [ -d "$SD/node_modules/sharp" ] && (cd "$SD" && node -e 'require("sharp")') 2>/dev/null; then
    log "sharp present ($(cd "$SD" && node -p 'require("./node_modules/sharp/package.json").version'))"
else
    log "npm install sharp in $SD"
    mkdir -p "$SD"
    (cd "$SD" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --no-audit --no-fund --silent sharp)
fi

# 4. darkroom venv check + images -------------------------------------------------------------
if ! "$DV/bin/python" -c 'import pyvips, PIL' 2>/dev/null; then
    echo "setup: $DV/bin/python cannot import pyvips and PIL (set DARKROOM_VENV)" >&2
    exit 1
fi
"$DV/bin/python" "$HERE/make_images.py" --out "$BENCH_DIR/images"
log "done"
