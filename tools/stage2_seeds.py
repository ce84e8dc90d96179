#!/usr/bin/env python
"""Stage 2 alone, over several seeds, exactly as the quality bench trains an ablation: the bench preset, the
bench's budget rule, stage 1 and SASRec reused from the bench's full run of the same seed
(``stage1_from=OUT/<dataset>/runs/full-seed<S>``), plus your overrides. Prints valid/test NDCG@10 per seed and
mean ± std; appends one JSON line per variant to ``--log``. For model work on top of a finished bench run.

    OMP_NUM_THREADS=1 .venv/bin/python tools/stage2_seeds.py --dataset ../shared/data/ml-100k --name p10 \\
        --budget 400 train.patience=10
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from training.bench.methods import bench_config, budget_overrides, stage2_only_overrides
from training.train import load_run_data, run_training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset folder the bench ran (its name keys OUT/<name>)")
    ap.add_argument("--bench-out", default="runs/bench-v3", help="the bench's output folder (its full runs)")
    ap.add_argument("--name", required=True, help="variant name: run folders OUT_DIR/<name>-seed<S>")
    ap.add_argument("--out-dir", default="runs/exp")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--budget", type=float, default=400.0, help="seconds per trained model, as the bench's")
    ap.add_argument("--log", default="runs/exp/results.jsonl")
    ap.add_argument("overrides", nargs="*", help="section.field=value, after the bench preset")
    args = ap.parse_args()

    key = Path(args.dataset.rstrip("/")).name
    data = load_run_data(args.dataset)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        full = Path(args.bench_out) / key / "runs" / f"full-seed{seed}"
        if not (full / "sasrec.pt").is_file():
            raise SystemExit(f"{full}: no finished bench run of seed {seed} (sasrec.pt missing): run the bench first")
        cfg = bench_config(args.dataset, Path(args.out_dir) / f"{args.name}-seed{seed}",
                           budget_overrides(args.epochs, args.budget) + list(args.overrides)
                           + stage2_only_overrides(full) + [f"train.seed={seed}"])
        started = time.time()
        hybrid = run_training(cfg, progress=False, log=lambda *_: None, data=data)["hymirec"]
        rows.append({"seed": seed, "valid": hybrid["valid_best_ndcg10"], "test": hybrid["test"]["NDCG@10"],
                     "epochs": len(hybrid["history"]), "seconds": time.time() - started})
        print(f"{args.name} seed {seed}: valid NDCG@10 {rows[-1]['valid']:.4f}, test {rows[-1]['test']:.4f}, "
              f"{rows[-1]['epochs']} epochs, {rows[-1]['seconds']:.0f} s", flush=True)
    for what in ("valid", "test"):
        values = np.array([r[what] for r in rows])
        print(f"{args.name} {args.overrides}: {what} NDCG@10 {values.mean():.4f} ± "
              f"{values.std(ddof=1) if len(values) > 1 else 0.0:.4f}")
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as fh:
        fh.write(json.dumps({"dataset": key, "name": args.name, "overrides": args.overrides, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
