#!/usr/bin/env bash
# Triton Inference Server for local serving/tests (issue 4).
#
# The real `tritonserver` binary ships inside the nvidia-pytriton wheel. Its Python backend needs
# numpy<2 (it silently returns zeros/empty outputs under numpy 2.x), so it lives in its own venv,
# `.venv-triton`, next to onnxruntime (the local model config runs the ONNX file under the Python
# backend). The server tree is copied to `.venv-triton/tritonserver` with the stub for this Python
# version dropped into backends/python, as PyTriton itself does (see ../shared/notes/stack.md).
#
# Idempotent: a stamp file records what was installed; the second run only checks the stamp.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
TVENV="${HYMIREC_TRITON_VENV:-$ROOT/.venv-triton}"
THOME="$TVENV/tritonserver"
STAMP="$TVENV/.stamp-triton"
PINS="nvidia-pytriton==0.7.0 numpy==1.26.4 onnxruntime==1.32.0"
WANT="$(printf '%s\n' "$PINS" | cat - "$0" | sha256sum | cut -d' ' -f1)"

if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && [ -x "$THOME/bin/tritonserver" ]; then
    echo "[setup] triton venv up to date ($TVENV)"
    exit 0
fi

if [ ! -x "$TVENV/bin/python" ]; then
    echo "[setup] creating $TVENV (numpy<2 for Triton's Python backend)"
    "$PYTHON" -m venv "$TVENV"
fi
echo "[setup] installing $PINS into $TVENV"
"$TVENV/bin/pip" install -q -U pip
# shellcheck disable=SC2086
"$TVENV/bin/pip" install -q $PINS

PYVER="$("$TVENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
SP="$("$TVENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SRC="$SP/pytriton/tritonserver"
[ -x "$SRC/bin/tritonserver" ] || { echo "[setup] ERROR: $SRC/bin/tritonserver missing" >&2; exit 1; }
[ -f "$SRC/python_backend_stubs/$PYVER/triton_python_backend_stub" ] || {
    echo "[setup] ERROR: no python backend stub for Python $PYVER in $SRC" >&2; exit 1; }

echo "[setup] preparing the server tree in $THOME"
rm -rf "$THOME.tmp"
cp -r "$SRC" "$THOME.tmp"
rm -rf "$THOME.tmp/python_backend_stubs"
cp "$SRC/python_backend_stubs/$PYVER/triton_python_backend_stub" "$THOME.tmp/backends/python/"
chmod +x "$THOME.tmp/backends/python/triton_python_backend_stub" "$THOME.tmp/bin/tritonserver"
rm -rf "$THOME"
mv "$THOME.tmp" "$THOME"

# Environment the server needs (read by serving/triton_server.py): the interpreter's own lib dir
# first (so the stub gets the matching libpython), then the bundled libs (relative RPATH breaks
# after the copy).
LIBDIR="$("$TVENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
cat > "$TVENV/triton-env.json" <<JSON
{"tritonserver": "$THOME/bin/tritonserver",
 "backend_dir": "$THOME/backends",
 "ld_library_path": "$LIBDIR:$SP/nvidia_pytriton.libs",
 "venv": "$TVENV",
 "python_version": "$PYVER"}
JSON

"$TVENV/bin/python" -c 'import numpy, onnxruntime; assert numpy.__version__.startswith("1."), numpy.__version__; print("[setup] triton venv: numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)'
echo "$WANT" > "$STAMP"
echo "[setup] triton ready: $THOME/bin/tritonserver"
