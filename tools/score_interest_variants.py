"""Score a trained HyMiRec run's interests several ways, without retraining (valid and test, all users).

    query       the K interest-query outputs (the paper's interests)
    last-state  the LLM's state after the newest recent item, through the same head (the dense loss's
                next-item prediction; only meaningful when the run trained hybrid.next_item_weight > 0)
    sum         normalise(query + last-state): what `hybrid.anchor_last_item` serves
    max         the K queries and the last state merged by max, as K + 1 interests

    OMP_NUM_THREADS=1 .venv/bin/python tools/score_interest_variants.py runs/bench-v2/ml-100k/runs/full-seed0 \\
        ../shared/data/ml-100k
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from features.artifacts import RunLayout
from features.codebook import ResidualCodebook
from training.batches import model_inputs
from training.data import leave_one_out
from training.evaluate import evaluate_interests
from training.stage2 import ItemTables, _tensors
from training.train import decoded_item_table, load_hybrid, load_run_data


def interest_variants(model, tables: ItemTables, histories: list[np.ndarray], batch: int = 256) -> dict:
    cfg = model.config
    queries, lasts = [], []
    with torch.no_grad():
        for start in range(0, len(histories), batch):
            inputs = model_inputs(histories[start:start + batch], cfg.long_len, cfg.recent_n, cfg.long_window)
            q, states = model.forward_train(*_tensors(model, inputs, tables, tables.exact.device))
            queries.append(q.numpy())
            lasts.append(states[:, -1:].numpy())
    q, last = np.concatenate(queries), np.concatenate(lasts)
    both = q + last
    return {"query": q, "last-state": last, "sum": both / np.linalg.norm(both, axis=-1, keepdims=True),
            "max": np.concatenate([q, last], 1)}


def main(run_dir: str, dataset: str) -> None:
    layout = RunLayout.at(run_dir)
    model = load_hybrid(run_dir)
    if not model.config.use_llm:
        raise SystemExit(f"{run_dir}: no LLM recommender (use_llm=false), so no recent-item states to score")
    exact = torch.from_numpy(np.load(layout.item_embeddings))
    decoded = decoded_item_table(ResidualCodebook.load(layout.codebook), np.load(layout.item_codes))
    tables = ItemTables(exact, torch.from_numpy(decoded) if model.config.use_codebook else exact)
    split = leave_one_out(load_run_data(dataset))
    vectors = model.item_vectors(exact).numpy()
    print("part   variant     NDCG@10  R@10    R@50")
    for name, part in (("valid", split.valid), ("test", split.test)):
        for variant, interests in interest_variants(model, tables, part.histories).items():
            m = evaluate_interests(interests.astype(np.float32), vectors, part.histories, part.targets)
            print(f"{name:6} {variant:11} {m['NDCG@10']:.4f}  {m['Recall@10']:.4f}  {m['Recall@50']:.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
