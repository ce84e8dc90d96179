#!/usr/bin/env bash
# The Milvus standalone server (PyPI `milvus==2.3.5`, installed with the project) runs in its own network namespace
# behind socat relays (devservices/milvus_standalone.py: Milvus 2.3 binds every interface, the namespace keeps it
# loopback-only). Needs socat, iproute2 (`ip`) and util-linux (`unshare`) from Debian; unpacks the server's
# binaries once into .cache/milvus-<version>/bin. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/tools/lib/apt.sh"
apt_install_missing "the Milvus standalone server" socat:socat ip:iproute2 unshare:util-linux
bin_dir="$("$ROOT/.venv/bin/python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from devservices.milvus_standalone import binaries; print(binaries())' "$ROOT")"
echo "[setup] Milvus standalone binaries in ${bin_dir#$ROOT/}"
