"""`make demo`: the whole HyMiRec loop on embedded defaults (the synthetic dataset unless
HYMIREC_DEMO_DATASET points at a real one).

Steps, each printed as it runs:
  1. train (stage 1 item encoder → codebook → stage 2 hybrid + DMIL) and the baselines
  2. streaming: replay the interactions through Kafka and the stream processor into the Feast online store
  3. export: ONNX encoder + LLM (parity-checked) and a Triton model repository
  4. serving: Milvus Lite index, tritonserver, the serving pipeline → recommendations for a few users
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hymirec.quiet import quiet_dependency_warnings  # noqa: E402  (after the environment it must see)


def demo_config(run_dir: str, dataset: str):
    from training.config import RunConfig

    config = RunConfig(dataset=dataset, run_dir=run_dir)
    # Small enough to finish in a few minutes on 2 CPU cores; every stage still runs for real.
    config.item_encoder.finetune_steps = 20
    config.train.epochs = 6
    config.train.sasrec_epochs = 10
    return config


def print_table(title: str, rows: list[tuple[str, dict]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("model")
    keys = ["Recall@10", "Recall@20", "Recall@50", "NDCG@10", "NDCG@20", "NDCG@50"]
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows:
        table.add_row(name, *(f"{metrics[k]:.4f}" for k in keys))
    Console().print(table)


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)
    quiet_dependency_warnings()
    from training.train import run_training

    run_dir = os.environ.get("HYMIREC_DEMO_RUN_DIR", "runs/demo")
    dataset = os.environ.get("HYMIREC_DEMO_DATASET", "synthetic")
    print(f"== 1. training on '{dataset}' → {run_dir}")
    metrics = run_training(demo_config(run_dir, dataset))
    rows = [("popularity", metrics["popularity"]["test"])]
    if "sasrec" in metrics:
        rows.append(("SASRec", metrics["sasrec"]["test"]))
    rows.append(("HyMiRec", metrics["hymirec"]["test"]))
    print_table(f"test metrics ({dataset}, full ranking, leave-one-out)", rows)
    cb = metrics["codebook"]
    print(f"codebook: {cb['bytes_per_item_codes']} bytes per history item vs {cb['bytes_float32']} as float32 "
          f"({cb['ratio_codes']:.0f}x fewer); reconstruction cos mean {cb['cos_mean_codes']:.3f} "
          f"p5 {cb['cos_p5_codes']:.3f} (with per-layer scales: {cb['cos_mean_scales']:.3f})")
    write_demo_users(run_dir, dataset)
    from hymirec.demo_steps import STEPS

    for step in STEPS:
        step(run_dir, dataset)
    print("demo finished: every service it started has been stopped")
    return 0


def write_demo_users(run_dir: str, dataset: str) -> None:
    """The users the demo shows: the longest history (≥ 1,000 items on synthetic data) and two others."""
    import json
    from pathlib import Path

    from training.train import load_run_data

    data = load_run_data(dataset)
    order = sorted(range(data.n_users), key=lambda u: -len(data.sequences[u]))
    picks = [order[0], order[len(order) // 2], order[-1]]
    (Path(run_dir) / "demo_users.json").write_text(json.dumps([data.user_ids[u] for u in picks]))


if __name__ == "__main__":
    sys.exit(main())
