#!/usr/bin/env bash
# bench/mechanisms.py on a lent GPU machine: [SUITE=interests] bench/gpu_mechanisms.sh OUT [BUDGET_S]
#
# The machine is bare and offline: .gpu-data/ (git-ignored, carried) holds the dataset and the stage-1 folders made
# here first with `python -m bench.mechanisms prepare --dataset .gpu-data/ml-1m --out .gpu-data/mech` (the content
# encoder's weights do not travel; its item embeddings do). Needs only torch, transformers, numpy, scipy, pandas and
# tqdm besides this checkout, all in the machine's stock image. Every model gets the same BUDGET_S seconds of
# training (checked at epoch ends; the runs are then budget-bound, and the record says so), so the whole call
# fits one device lease. OUT gets the record (bench/records format), every run's metrics.json and log, a GPU trace.
set -euo pipefail
out=${1:?usage: bench/gpu_mechanisms.sh OUT [BUDGET_S]} budget=${2:-90}
data=${DATA:-.gpu-data/ml-1m} mech=${MECH:-.gpu-data/mech} py=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$out"
machine="one NVIDIA H200 (lent machine, 16 CPU cores)"
if command -v nvidia-smi >/dev/null; then
    "$py" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, torch.cuda.get_device_name(0))'
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 2000 > "$out/gpu_trace.csv" &
    trap 'kill %1 2>/dev/null || true' EXIT
else
    machine="development machine kind (2 CPU cores, no GPU)"
fi
started=$(date +%s)
# bounded, so that whatever finished is still packed and reported within one device call
timeout "${RUN_LIMIT:-470}" "$py" -m bench.mechanisms run --suite "${SUITE:-mechanisms}" --dataset "$data" --out "$mech" \
    --budget "$budget" ${SMOKE:+--smoke} || true
echo "[gpu_mechanisms] runs took $(( $(date +%s) - started )) s"
# the runs themselves first: the record can be made again from them anywhere (`report`)
tar czf "$out/runs.tgz" "$mech"/*/*/metrics.json "$mech"/*/*/train.log "$mech"/*/*/run_config.json || true
"$py" -m bench.mechanisms report --suite "${SUITE:-mechanisms}" --dataset "$data" --out "$mech" --machine "$machine" \
    --command "bench/gpu_mechanisms.sh \$OUT $budget  (after: python -m bench.mechanisms prepare --dataset $data --out $mech)" \
    --record "$out/mechanisms-$(basename "$data").json" > /dev/null
echo "[gpu_mechanisms] record: $out/mechanisms-$(basename "$data").json"
