"""Seconds per HyMiRec stage-2 optimisation step (forward + losses + backward + AdamW) for a given LLM backbone.

    OMP_NUM_THREADS=1 .venv/bin/python bench/llm_step.py --batch 8 --steps 3 \
        --set hybrid.llm.path=smollm2 --set hybrid.llm.keep_layers=2

The step is stage 2's own (training/stage2.py, train_hybrid's inner loop: DMIL with Hungarian matching, the dense
next-item loss when hybrid.next_item_weight > 0, gradient clipping, AdamW) on random histories of a synthetic
catalogue, so only the model's size and the token count matter. torch's thread count follows OMP_NUM_THREADS.
Prints one JSON line: the backbone's size, tokens per sample, and the median / min step seconds after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.batches import train_batch, window_samples  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.dmil import dmil_loss, match_targets_to_queries, next_item_loss  # noqa: E402
from training.hybrid import HybridRecommender  # noqa: E402
from training.llm_backbone import backbone_summary  # noqa: E402
from training.stage2 import ItemTables, _tensors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--item-dim", type=int, default=384)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    config = RunConfig().override(args.set)
    hybrid, train = config.hybrid, config.train
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model = HybridRecommender(hybrid, args.item_dim, args.items)
    build_seconds = time.perf_counter() - started
    exact = torch.randn(args.items + 1, args.item_dim)
    exact[0] = 0
    tables = ItemTables(exact=exact, long=exact)
    sequences = [rng.integers(1, args.items + 1, size=hybrid.long_len + hybrid.recent_n + hybrid.window)
                 for _ in range(args.batch * (args.steps + 1))]
    dense = hybrid.next_item_weight > 0
    samples = window_samples(sequences, hybrid.window, 0, rng)  # each user's final window: full-length inputs
    params = model.optimizer_groups(train.lr, hybrid.llm.lr) if hybrid.llm.lr > 0 else model.parameters()
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    all_ids = torch.arange(args.items + 1)
    model.train()
    seconds = []
    for step in range(args.steps + 1):
        batch = train_batch(sequences, samples[step * args.batch:(step + 1) * args.batch], hybrid.long_len,
                            hybrid.recent_n, hybrid.window)
        t0 = time.perf_counter()
        interests, recent_vecs = model.forward_train(*_tensors(model, batch, tables, torch.device("cpu")))
        target_ids = torch.from_numpy(batch.target_ids)
        catalogue = model.item_tower(tables.exact, all_ids)
        target_vecs = catalogue[target_ids]
        neg_ids = torch.from_numpy(rng.integers(1, args.items + 1, size=min(hybrid.n_negatives, args.items)))
        assignment = match_targets_to_queries(interests.detach().numpy(),
                                              F.normalize(target_vecs.detach(), dim=-1).numpy(), batch.target_mask, rng)
        loss, _ = dmil_loss(interests, target_vecs, target_ids, torch.from_numpy(batch.target_mask),
                            torch.from_numpy(assignment), catalogue[neg_ids], neg_ids, model.logit_scale,
                            hybrid.false_negative_threshold)
        if dense and recent_vecs is not None:
            loss = loss + hybrid.next_item_weight * next_item_loss(
                recent_vecs, torch.from_numpy(batch.recent_ids), target_ids[:, 0], catalogue, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seconds.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {step}")
    timed = seconds[1:]
    tokens = hybrid.recent_n + (hybrid.lightweight.n_coarse if hybrid.use_lightweight else 0) + hybrid.n_interests
    print(json.dumps({"overrides": args.set, "batch": args.batch, "threads": torch.get_num_threads(),
                      "backbone": backbone_summary(model.llm.backbone), "llm_tokens_per_sample": tokens,
                      "long_len": hybrid.long_len, "build_seconds": round(build_seconds, 2),
                      "step_seconds_median": round(statistics.median(timed), 3), "step_seconds_min": round(min(timed), 3),
                      "warmup_seconds": round(seconds[0], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
