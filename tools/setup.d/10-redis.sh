#!/usr/bin/env bash
# Redis server for the Feast Redis online store (tests, demo, benchmarks start it themselves on a free port).
# Idempotent: installs Debian's redis-server only when the binary is missing; does not start or enable a service.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    echo "[setup] redis-server present ($(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'))"
    exit 0
fi
echo "[setup] installing redis-server (apt-get)"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the package's init script from starting a system-wide server on port 6379
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null; $SUDO chmod +x "$POLICY"; CLEAN_POLICY=1
fi
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
[ "${CLEAN_POLICY:-0}" = 1 ] && $SUDO rm -f "$POLICY"
command -v redis-server >/dev/null && echo "[setup] redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') installed"
