#!/usr/bin/env bash
# The Milvus standalone server (PyPI `milvus==2.3.5`, installed with the project) runs in its own network namespace
# behind socat relays (devservices/milvus_standalone.py: Milvus 2.3 binds every interface, the namespace keeps it
# loopback-only). Needs socat, iproute2 (`ip`) and util-linux (`unshare`) from Debian; unpacks the server's
# binaries once into .cache/milvus-<version>/bin. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[setup] installing ${missing[*]} (apt-get) for the Milvus standalone server"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bin_dir="$("$ROOT/.venv/bin/python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from devservices.milvus_standalone import binaries; print(binaries())' "$ROOT")"
echo "[setup] Milvus standalone binaries in ${bin_dir#$ROOT/}"
