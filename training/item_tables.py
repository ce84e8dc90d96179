"""Stage 1 and the item tables stage 2 reads: content-encoder item embeddings (or a finished run's, reused), the
run's residual codebook fit on them, the decoded table the long history looks items up in, and the id tables' SASRec
warm start. training/train.py runs them in order; the retrain DAG's refresh steps call the same functions."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from core.artifacts import RunLayout
from features.codebook import CodebookConfig
from training.config import RunConfig


def item_texts_or_ids(data) -> list[str]:
    """Item text per index; items without text fall back to their raw id (never an empty string)."""
    texts = data.item_texts or [""] * len(data.item_ids)
    return [t if t else f"item {raw}" for t, raw in zip(texts, data.item_ids)]


def fit_codebook(item_embeddings: np.ndarray, settings: CodebookConfig, seed: int, log=print):
    """Fit on the item pool (rows 1..n), encode every item with ``settings`` and the run's seed (one seed per
    run). The codebook size shrinks for tiny catalogues."""
    from features.codebook import ResidualCodebook

    pool = item_embeddings[1:]
    size = min(settings.codebook_size, max(2, len(pool) // 4))
    if size != settings.codebook_size:
        log(f"[codebook] {len(pool)} items: codebook size reduced {settings.codebook_size} → {size}")
    codebook = ResidualCodebook.fit(pool, dataclasses.replace(settings, codebook_size=size, seed=seed))
    codes, scales = codebook.encode_with_scales(pool)
    pad = np.zeros((1, codes.shape[1]), codes.dtype)
    return codebook, np.concatenate([pad, codes]), np.concatenate([np.zeros((1, scales.shape[1]), scales.dtype), scales])


def decoded_item_table(codebook, codes: np.ndarray) -> np.ndarray:
    """codes [n_items+1, L] (row 0 = padding) → what the long history sees: [n_items+1, d] float32, row 0 zero."""
    decoded = codebook.decode(codes[1:]).astype(np.float32)
    return np.concatenate([np.zeros((1, decoded.shape[1]), np.float32), decoded])


def hybrid_item_tables(item_emb: np.ndarray, codebook, codes: np.ndarray, use_codebook: bool, device="cpu"):
    """Stage 2's item tables: the exact stage-1 embeddings, and what the long history sees (decoded from the
    codes, or the exact ones for the no-codebook ablation). Training and bench/interest_diagnostics.py share it."""
    from training.stage2 import ItemTables

    exact = torch.from_numpy(item_emb).to(device)
    long = torch.from_numpy(decoded_item_table(codebook, codes)).to(device) if use_codebook else exact
    return ItemTables(exact=exact, long=long)


def reuse_stage1(config: RunConfig, n_items: int, log=print) -> tuple[np.ndarray, dict]:
    """Stage-1 item embeddings of the run directory `config.stage1_from`, after checking that it was trained
    on the same dataset with the same item-encoder settings and seed (anything else would not be stage 1
    of *this* run). Returns (item_emb [n_items+1, d], its item_representation record, marked as reused)."""
    source = RunLayout.at(config.stage1_from)
    if not source.config.is_file() or not source.item_embeddings.is_file():
        raise FileNotFoundError(f"stage1_from={source.root}: no finished run there (config.json, item_embeddings.npy)")
    saved = RunConfig.load(source.config)
    # The same dataset folder may be named relative to where a run started or absolutely (a bench plan resolves
    # its paths): compare where they point.
    def where(dataset: str) -> str:
        return dataset if dataset == "synthetic" else str(Path(dataset).resolve())

    for what, theirs, ours in (("dataset", where(saved.dataset), where(config.dataset)),
                               ("item_encoder settings", saved.item_encoder, config.item_encoder),
                               ("train.seed", saved.train.seed, config.train.seed)):
        if theirs != ours:
            raise ValueError(f"stage1_from={source.root}: its {what} ({theirs!r}) differ from this run's ({ours!r})")
    item_emb = np.load(source.item_embeddings)
    if item_emb.shape[0] != n_items + 1:
        raise ValueError(f"stage1_from={source.item_embeddings}: {item_emb.shape[0]} rows, expected {n_items + 1}")
    representation = json.loads(source.metrics.read_text()).get("item_representation", {})
    log(f"[stage 1] reusing the item embeddings of {source.root}")
    return item_emb, {**representation, "reused_from": str(source.root)}


def init_ids_from_sasrec(model, config: RunConfig, sasrec=None, log=print) -> dict:
    """`hybrid.id_init=sasrec`: start ``model``'s id tables from SASRec's item table: ``sasrec`` (this run's
    model) when given, else the ``sasrec.pt`` of the run ``config.stage1_from`` (ablations train none)."""
    source = "this run" if sasrec is not None else config.stage1_from
    if sasrec is not None:
        table = sasrec.item_emb.weight.detach()
    else:
        sasrec_file = RunLayout.at(config.stage1_from).sasrec
        table = torch.load(sasrec_file, map_location="cpu", weights_only=True)["item_emb.weight"]
    device = next(model.parameters()).device
    tables_set = model.init_ids_from(table.float().to(device))
    log(f"[stage 2] {', '.join(tables_set)} start from SASRec's item embeddings ({source})")
    return {"from": "sasrec", "run": source, "tables": tables_set}


def content_item_embeddings(config: RunConfig, data, train_sequences, device, progress: bool = True, log=print):
    """Stage 1 on item text: fine-tune the content encoder on next-item pairs, then encode every item.
    Returns (item_emb float32 [n_items+1, d] with row 0 = 0, the encoder, its record). The DAG's
    refresh_item_embeddings step calls this too, so a retrain's stage 1 is the training run's. Seeding torch is the
    caller's: inside a run, SASRec has drawn from the generator before (the run's numbers depend on that order)."""
    from training.item_encoder import ContentItemEncoder, finetune_item_encoder

    encoder = ContentItemEncoder(config.item_encoder).to(device)
    texts = item_texts_or_ids(data)
    stats = finetune_item_encoder(encoder, texts, train_sequences, config.item_encoder, config.train.seed,
                                  progress, log)
    item_emb = encoder.encode(texts, config.item_encoder.encode_batch, progress).astype(np.float32)
    item_emb[0] = 0
    record = {"kind": "content_encoder", "backbone": encoder.path, "pooling": encoder.pooling, "finetune": stats}
    return item_emb, encoder, record
