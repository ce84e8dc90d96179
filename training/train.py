"""`hymirec train`: the whole two-stage HyMiRec run, plus the popularity and SASRec baselines.

    data → split → baselines → stage 1 (item embeddings) → codebook → stage 2 (hybrid + DMIL)
         → test metrics → artifacts in the run directory (features/artifacts.py RunLayout)
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from features.artifacts import RunLayout, write_json_atomic
from training.config import RunConfig


def load_run_data(dataset: str, seed: int = 0):
    from training.data import load_dataset, synthetic

    return synthetic(seed=seed) if dataset == "synthetic" else load_dataset(dataset)


def item_texts_or_ids(data) -> list[str]:
    """Item text per index; items without text fall back to their raw id (never an empty string)."""
    texts = data.item_texts or [""] * len(data.item_ids)
    return [t if t else f"item {raw}" for t, raw in zip(texts, data.item_ids)]


def fit_codebook(item_embeddings: np.ndarray, settings, seed: int, log=print):
    """Fit on the item pool (rows 1..n), encode every item. Codebook size shrinks for tiny catalogues."""
    from features.codebook import CodebookConfig, ResidualCodebook

    pool = item_embeddings[1:]
    size = min(settings.codebook_size, max(2, len(pool) // 4))
    if size != settings.codebook_size:
        log(f"[codebook] {len(pool)} items: codebook size reduced {settings.codebook_size} → {size}")
    codebook = ResidualCodebook.fit(pool, CodebookConfig(n_layers=settings.n_layers, codebook_size=size,
                                                         kmeans_iters=settings.kmeans_iters, seed=seed))
    codes, scales = codebook.encode_with_scales(pool)
    pad = np.zeros((1, codes.shape[1]), codes.dtype)
    return codebook, np.concatenate([pad, codes]), np.concatenate([np.zeros((1, scales.shape[1]), scales.dtype), scales])


def run_training(config: RunConfig, progress: bool = True, log=print) -> dict:
    from training.data import dataset_summary, leave_one_out
    from training.evaluate import evaluate_rankings, popularity_topk
    from training.hybrid import HybridRecommender
    from training.item_encoder import ContentItemEncoder, finetune_item_encoder
    from training.sasrec import SASRecConfig, evaluate_sasrec, train_sasrec
    from training.stage2 import ItemTables, evaluate_hybrid, pick_device, train_hybrid

    started = time.perf_counter()
    torch.manual_seed(config.train.seed)
    layout = RunLayout.at(config.run_dir).ensure()
    device = pick_device(config.train.device)
    data = load_run_data(config.dataset, config.train.seed)
    split = leave_one_out(data)
    summary = dataset_summary(data)
    log(f"[data] {data.name}: {summary}")
    metrics: dict = {"dataset": summary, "device": str(device), "config": config.to_dict()}

    counts = np.bincount(np.concatenate(split.train), minlength=data.n_items + 1).astype(np.int64)
    counts[0] = 0
    metrics["popularity"] = {
        name: evaluate_rankings(popularity_topk(split.train, data.n_items, part.histories, 50), part.targets)
        for name, part in (("valid", split.valid), ("test", split.test))}
    log(f"[popularity] test {metrics['popularity']['test']}")

    # SASRec baseline. Without item text its item table is also HyMiRec's stage-1 embedding.
    sasrec = None
    if config.train_sasrec or not data.has_text:
        t0 = time.perf_counter()
        sas_cfg = SASRecConfig(dim=config.item_encoder.id_embedding_dim if not data.has_text else 64,
                               epochs=config.train.sasrec_epochs, lr=config.train.sasrec_lr,
                               seed=config.train.seed, max_train_seconds=config.train.max_train_seconds)
        sasrec, sas_hist = train_sasrec(split.train, data.n_items, split.valid, sas_cfg, device, progress, log,
                                        config.train.max_eval_users)
        metrics["sasrec"] = {"valid_best_ndcg10": sas_hist["best_valid_ndcg10"],
                             "test": evaluate_sasrec(sasrec, split.test),
                             "train_seconds": time.perf_counter() - t0, "epochs": len(sas_hist["epochs"])}
        torch.save(sasrec.state_dict(), layout.sasrec)
        log(f"[sasrec] test {metrics['sasrec']['test']}")

    # Stage 1: item embeddings (frozen afterwards).
    t0 = time.perf_counter()
    if data.has_text:
        encoder = ContentItemEncoder(config.item_encoder).to(device)
        texts = item_texts_or_ids(data)
        stage1 = finetune_item_encoder(encoder, texts, split.train, config.item_encoder, config.train.seed, progress, log)
        item_emb = encoder.encode(texts, config.item_encoder.encode_batch, progress)
        item_emb[0] = 0
        metrics["item_representation"] = {"kind": "content_encoder", "backbone": encoder.path,
                                          "pooling": encoder.pooling, "finetune": stage1}
        del encoder
    else:
        weights = sasrec.item_emb.weight.detach().float().cpu().numpy()
        item_emb = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-8)
        item_emb[0] = 0
        metrics["item_representation"] = {
            "kind": "item_id_embedding", "note": "dataset has no item text: learned item-id embedding "
            "(SASRec next-item training) used in place of the content encoder"}
        log("[stage 1] no item text: using a learned item-id embedding (flagged in metrics.json)")
    item_emb = item_emb.astype(np.float32)
    metrics["stage1_seconds"] = time.perf_counter() - t0

    # Cosine residual codebook over the item pool: the long history is stored and fetched as codes.
    t0 = time.perf_counter()
    codebook, codes, scales = fit_codebook(item_emb, config.codebook, config.train.seed, log)
    metrics["codebook"] = {**codebook.report(item_emb[1:]), "fit_seconds": time.perf_counter() - t0}
    log(f"[codebook] {json.dumps({k: v for k, v in metrics['codebook'].items() if not isinstance(v, (dict, list))})}")
    decoded = codebook.decode(codes[1:]).astype(np.float32)
    decoded = np.concatenate([np.zeros((1, decoded.shape[1]), np.float32), decoded])

    # Stage 2: hybrid recommender with DMIL.
    t0 = time.perf_counter()
    exact = torch.from_numpy(item_emb).to(device)
    tables = ItemTables(exact=exact, long=torch.from_numpy(decoded).to(device) if config.hybrid.use_codebook else exact)
    model = HybridRecommender(config.hybrid, item_emb.shape[1], data.n_items).to(device)
    history = train_hybrid(model, tables, split.train, split.valid, config.hybrid, config.train, progress, log)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = evaluate_hybrid(model, tables, split.test, config.train.eval_batch)
    per_user_ms = 1000 * (time.perf_counter() - t0) / max(1, len(split.test.targets))
    metrics["hymirec"] = {"valid_best_ndcg10": history["best_valid_ndcg10"], "test": test,
                          "train_seconds": train_seconds, "inference_ms_per_user": per_user_ms,
                          "history": history["epochs"]}
    log(f"[hymirec] test {test}")

    vectors = model.item_vectors(exact).float().cpu().numpy()
    np.save(layout.item_embeddings, item_emb)
    np.save(layout.item_vectors, vectors)
    np.save(layout.recent_item_embeddings, model.recent_table(exact).float().cpu().numpy())
    np.save(layout.item_popularity, counts)
    np.save(layout.item_codes, codes)
    np.save(layout.item_scales, scales)
    codebook.save(layout.codebook)
    torch.save({"state_dict": model.state_dict(), "item_dim": int(item_emb.shape[1]), "n_items": data.n_items,
                "hybrid": config.to_dict()["hybrid"]}, layout.model)
    write_json_atomic(layout.item_ids, data.item_ids)
    write_json_atomic(layout.item_titles, item_texts_or_ids(data) if data.has_text else [""] * len(data.item_ids))
    write_json_atomic(layout.dataset, summary)
    write_json_atomic(layout.config, config.to_dict())
    metrics["total_seconds"] = time.perf_counter() - started
    write_json_atomic(layout.metrics, metrics)
    return metrics


def load_hybrid(run_dir: str, device: str = "cpu"):
    """Rebuild the trained HybridRecommender from a run directory (for export and ablations)."""
    from training.config import HybridConfig
    from training.hybrid import HybridRecommender

    saved = torch.load(RunLayout.at(run_dir).model, map_location=device, weights_only=False)
    model = HybridRecommender(HybridConfig(**saved["hybrid"]), saved["item_dim"], saved["n_items"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()
