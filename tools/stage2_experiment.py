"""Re-run stage 2 alone on one dataset with config overrides, reusing cached stage-1 item embeddings.

For model experiments: stage 1 (the MiniLM fine-tune) costs minutes on a CPU, and it does not change between
stage-2 variants. Appends one JSON line per run to CACHE_DIR/results.jsonl.

    OMP_NUM_THREADS=1 .venv/bin/python tools/stage2_experiment.py ../shared/data/ml-100k dense \\
        train.epochs=4 hybrid.long_len=200 hybrid.next_item_weight=1.0 hybrid.n_negatives=-1

Datasets without text: `stage1_from=RUN_DIR` takes a finished run's stage-1 item embeddings (checked to come
from the same dataset, item-encoder settings and seed).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training.bench.methods import BENCH_PRESET
from training.config import RunConfig
from training.data import leave_one_out
from training.hybrid import HybridRecommender
from training.stage2 import ItemTables, evaluate_hybrid, train_hybrid
from training.train import (decoded_item_table, fit_codebook, init_ids_from_sasrec, item_texts_or_ids,
                            load_run_data, reuse_stage1)

CACHE_DIR = Path(os.environ.get("HYMIREC_EXPERIMENT_DIR", "runs/stage2-experiments"))


def stage1_embeddings(cfg: RunConfig, data, split) -> np.ndarray:
    cache = CACHE_DIR / f"{Path(cfg.dataset.rstrip('/')).name}-seed{cfg.train.seed}-item_emb.npy"
    if cache.exists():
        return np.load(cache)
    from training.item_encoder import ContentItemEncoder, finetune_item_encoder

    encoder = ContentItemEncoder(cfg.item_encoder)
    texts = item_texts_or_ids(data)
    finetune_item_encoder(encoder, texts, split.train, cfg.item_encoder, cfg.train.seed, True, print)
    emb = encoder.encode(texts, cfg.item_encoder.encode_batch, True).astype(np.float32)
    emb[0] = 0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, emb)
    return emb


def main(dataset: str, tag: str, overrides: list[str]) -> dict:
    cfg = RunConfig(dataset=dataset).override(BENCH_PRESET + overrides)
    torch.manual_seed(cfg.train.seed)
    data = load_run_data(dataset, cfg.train.seed)
    split = leave_one_out(data)
    if cfg.stage1_from:  # e.g. a no-text dataset, whose stage 1 is the SASRec training of a bench run
        item_emb = reuse_stage1(cfg, data.n_items)[0].astype(np.float32)
    elif not data.has_text:
        raise SystemExit(f"{dataset}: no item text, so stage 1 is a SASRec training: pass stage1_from=RUN_DIR")
    else:
        item_emb = stage1_embeddings(cfg, data, split)
    codebook, codes, _ = fit_codebook(item_emb, cfg.codebook, cfg.train.seed, print)
    decoded = decoded_item_table(codebook, codes)
    exact = torch.from_numpy(item_emb)
    tables = ItemTables(exact, torch.from_numpy(decoded) if cfg.hybrid.use_codebook else exact)
    model = HybridRecommender(cfg.hybrid, item_emb.shape[1], data.n_items)
    if cfg.hybrid.id_init == "sasrec":  # the SASRec of the stage1_from run
        if not cfg.stage1_from:
            raise SystemExit("hybrid.id_init=sasrec: pass stage1_from=RUN_DIR (its sasrec.pt is used)")
        init_ids_from_sasrec(model, cfg)
    started = time.time()
    history = train_hybrid(model, tables, split.train, split.valid, cfg.hybrid, cfg.train, True, print)
    test = evaluate_hybrid(model, tables, split.test)
    result = {"tag": tag, "dataset": dataset, "overrides": overrides, "best_valid_ndcg10": history["best_valid_ndcg10"],
              "test": test, "epochs": len(history["epochs"]), "seconds": time.time() - started}
    print(json.dumps(result))  # first: a failed write below must not lose the result
    CACHE_DIR.mkdir(parents=True, exist_ok=True)  # not made yet when stage1_from skipped the embedding cache
    with (CACHE_DIR / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
