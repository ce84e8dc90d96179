#!/usr/bin/env bash
# GPU check of training: tools/gpu_check.sh DATASET CONFIG OUT
#
# Trains HyMiRec (stage 1: SASRec ids + codebook; stage 2: lightweight + LLM recommender under bf16 autocast) on
# CUDA with a run config written by the CPU bench (same budget, seed, sizes), then the K = 3 ablation on top of
# that run's stage 1, and keeps both metrics.json files plus a GPU-memory trace in OUT. Needs only torch, numpy,
# scipy and tqdm besides this checkout (PYTHONPATH), so it runs on a stock PyTorch CUDA image; datasets without
# item text only (the content encoder's weights are not carried). The numbers it gave: BENCHMARKS.md, "GPU check".
set -euo pipefail
dataset=$1 config=$2 out=$3 device=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the commands
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
trace=""
if [ "$device" = cuda ]; then
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__,
                "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 > "$out/gpu_trace.csv" &
    trace=$!
fi
trap '[ -z "$trace" ] || kill $trace 2>/dev/null || true' EXIT

full=${WORK:-/tmp/gpu-check}/full
python3 -m hymirec.cli train --quiet --dataset "$dataset" --config "$config" --run-dir "$full" \
    --set train.device="$device" | tail -n 40
cp "$full/metrics.json" "$out/full-metrics.json"

# The K = 3 ablation as the bench trains it: stage 2 alone on the full run's stage 1 (bench/methods.py).
k3=${WORK:-/tmp/gpu-check}/k3
python3 -m hymirec.cli train --quiet --dataset "$dataset" --config "$config" --run-dir "$k3" \
    --set train.device="$device" --set hybrid.n_interests=3 --set train_sasrec=false --set "stage1_from=$full" | tail -n 40
cp "$k3/metrics.json" "$out/k3-metrics.json"
