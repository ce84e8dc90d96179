#!/usr/bin/env bash
# Create/refresh the virtual environment of one peer library (docs/peers.md):
#   bench/peers/setup.sh rectools|recbole|rechub|all
# Idempotent: a stamp holds the hash of the library's requirements.txt and this script.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

setup_one() {
    local lib="$1"
    local req="bench/peers/$lib/requirements.txt"
    [ -f "$req" ] || { echo "[peers] unknown library '$lib': no $req" >&2; exit 2; }
    local venv="$ROOT/.venv-peers/$lib"
    local stamp="$venv/.stamp-install"
    local want
    want="$(cat "$req" bench/peers/setup.sh | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        echo "[peers] $venv up to date"
        return
    fi
    echo "[peers] installing $lib into $venv (first time: a few minutes)"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q -U pip
    "$venv/bin/pip" install -q -r "$req"
    echo "$want" > "$stamp"
}

if [ "${1:-}" = "all" ]; then
    for dir in bench/peers/*/; do
        # not every folder is a library (reference/ holds published numbers): an `if`, so that the
        # loop's status is not the last test's
        if [ -f "$dir/requirements.txt" ]; then setup_one "$(basename "$dir")"; fi
    done
else
    setup_one "${1:?usage: bench/peers/setup.sh LIB|all}"
fi
