"""A small but complete run directory for serving tests and the serving benchmark, built in seconds.

It uses the lead's real model classes (training.hybrid.HybridRecommender, random init: the weights do not matter
for serving checks), a real residual codebook (features.codebook), and the real exporters
(training.export.onnx_export with its parity check). Nothing here replaces a trained run; it only avoids training
inside serving tests.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def make_serving_run(root: str | os.PathLike, *, n_items: int = 2000, d_item: int = 32, n_users: int = 60,
                     seed: int = 0, n_cases: int = 100, codebook_size: int = 16) -> dict:
    import torch

    from core.artifacts import RunLayout, write_json_atomic
    from features.codebook import CodebookConfig, ResidualCodebook
    from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, RunConfig
    from training.export.onnx_export import export_run
    from training.hybrid import HybridRecommender

    t0 = time.perf_counter()
    layout = RunLayout.at(root).ensure()
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_items + 1, d_item)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[0] = 0
    item_ids = ["<pad>"] + [f"item{i}" for i in range(1, n_items + 1)]
    titles = [""] + [f"Synthetic item number {i}" for i in range(1, n_items + 1)]
    pop = np.concatenate([[0], rng.zipf(1.5, n_items).clip(max=10_000)]).astype(np.int64)

    codebook = ResidualCodebook.fit(emb[1:], CodebookConfig(n_layers=2, codebook_size=codebook_size,
                                                            kmeans_iters=5, seed=seed))
    codes = codebook.encode(emb[1:]).astype(np.uint16)
    codes = np.concatenate([np.zeros((1, codes.shape[1]), codes.dtype), codes])

    torch.manual_seed(seed)
    hybrid = HybridConfig(long_len=64, recent_n=10, n_interests=3, out_dim=32, item_tower_dropout=0.0,
                          lightweight=LightweightConfig(model_dim=32, n_layers=1, n_heads=2, n_coarse=4, max_len=256,
                                                        dropout=0.0),
                          llm=LLMRecommenderConfig(hidden=64, layers=1, heads=4, kv_heads=2, intermediate=128,
                                                   dropout=0.0))
    model = HybridRecommender(hybrid, d_item, n_items).eval()
    with torch.no_grad():
        vectors = model.item_vectors(torch.from_numpy(emb)).float().numpy()

    np.save(layout.item_embeddings, emb)
    np.save(layout.item_vectors, vectors)
    np.save(layout.item_popularity, pop)
    np.save(layout.item_codes, codes)
    codebook.save(layout.codebook)
    write_json_atomic(layout.item_ids, item_ids)
    write_json_atomic(layout.item_titles, titles)
    config = RunConfig(hybrid=hybrid)
    write_json_atomic(layout.config, config.to_dict())
    torch.save({"state_dict": model.state_dict(), "item_dim": d_item, "n_items": n_items,
                "hybrid": config.to_dict()["hybrid"]}, layout.model)
    # The real `hymirec export onnx` path: reload model.pt (training.train.load_hybrid), export, parity-check.
    manifest = export_run(layout.root, n_cases=n_cases)

    users = {}
    for u in range(n_users):
        length = int(rng.integers(3, 120))
        hist = rng.integers(1, n_items + 1, size=length)
        users[f"user{u}"] = hist
    return {"layout": layout, "model": model, "manifest": manifest, "users": users, "codes": codes,
            "item_ids": item_ids, "vectors": vectors, "seconds": time.perf_counter() - t0}


def user_states(run: dict, recent_keep: int = 50):
    """UserState rows (features.store) for the run's users: codes of the whole history, last raw ids."""
    from features.store import UserState

    states = []
    for uid, hist in run["users"].items():
        recent = hist[-recent_keep:]
        states.append(UserState(user_id=uid, codes=run["codes"][hist],
                                recent_items=[run["item_ids"][i] for i in recent],
                                recent_times_ms=[1_700_000_000_000 + j for j in range(len(recent))],
                                last_event_time_ms=1_700_000_000_000 + len(recent), n_applied=len(hist)))
    return states


def open_test_store(path: str | os.PathLike):
    """A Feast SQLite online store in `path`; returns (store, config_file for HYMIREC_FEAST_REPO)."""
    import json

    from features.store import StoreConfig, open_store

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"type": "sqlite", "sqlite_path": str(path / "online.db"), "registry_path": str(path / "registry.db")}
    cfg_file = path / "store.json"
    cfg_file.write_text(json.dumps(cfg))
    store = open_store(StoreConfig.from_mapping(cfg), apply=True)
    return store, str(cfg_file)
