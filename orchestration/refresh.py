"""The step functions of hymirec_codebook_refresh (re-exported by orchestration.retrain, where STEPS points)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.artifacts import RunLayout, sha256_file
from serving.run_artifacts import EXTRA_ITEMS
from orchestration.artifact_root import ArtifactRoot, push_codes, run_recorded, source_signature


def _item_source(source: str) -> list[tuple[str, str]]:
    if source.endswith(".item"):
        from training.datasets.loaders import read_item_texts

        return list(read_item_texts(Path(source)).items())
    from training.data import load_dataset
    from training.item_tables import item_texts_or_ids

    data = load_dataset(source)
    return list(zip(data.item_ids[1:], item_texts_or_ids(data)[1:]))


def encode_new_items(ctx) -> dict:
    """Items of ``item_source`` the production model does not know, encoded with the production stage-1 encoder
    and the production codebook (no refit: codes of known items never change between retrains)."""
    production = ArtifactRoot(ctx["artifact_root"]).production()
    if production is None:
        raise RuntimeError("no production model in the registry: run hymirec_retrain first")
    source = ctx["params"].get("item_source") or ""
    run = RunLayout.at(production["run_dir"])
    stage1 = Path(production["stage1_dir"])

    def compute(tmp: Path):
        import torch

        from features.codebook import ResidualCodebook
        from features.item_codes import save_item_codes
        from training.config import ItemEncoderConfig
        from training.item_encoder import ContentItemEncoder

        known = set(run.read_json(run.item_ids))
        new = [(i, t or f"item {i}") for i, t in (_item_source(source) if source else []) if i not in known]
        codebook = ResidualCodebook.load(run.codebook)
        if new:
            saved = json.loads((stage1 / "encoder.json").read_text())
            encoder = ContentItemEncoder(ItemEncoderConfig(**{**saved["item_encoder"], "backbone_path": saved["path"]}))
            encoder.load_state_dict(torch.load(stage1 / "encoder.pt", map_location="cpu", weights_only=True))
            emb = encoder.encode([t for _, t in new], progress=False).astype(np.float32)
            codes = codebook.encode(emb)
        else:
            emb, codes = np.zeros((0, 1), np.float32), np.zeros((0, codebook.config.n_layers), np.uint16)
        np.save(tmp / "item_embeddings.npy", emb)
        save_item_codes(tmp / "item_codes.npz", [i for i, _ in new], codes)
        return {"n_new": len(new), "source": source}, ["item_embeddings.npy", "item_codes.npz"]

    inputs = {"source": source_signature(source) if source else [], "codebook": production["hashes"]["run"]["codebook.npz"],
              "encoder": sha256_file(stage1 / "encoder.pt")}
    result = run_recorded(ctx, ArtifactRoot(ctx["artifact_root"]).refresh(ctx["interval_key"]) / "new_items",
                          ArtifactRoot(ctx["artifact_root"]).refresh(ctx["interval_key"]) / "steps", inputs, compute)
    return {**result, "codebook_id": production["hashes"]["run"]["codebook.npz"], "model_version": production["version"]}


def publish_item_codes(ctx, encoded: dict) -> dict:
    from features.item_codes import load_item_codes

    if not encoded.get("n_new"):
        return {"pushed": 0, "note": "no new items in the interval", "interval_key": ctx["interval_key"]}
    ids, codes = load_item_codes(Path(encoded["dir"]) / "item_codes.npz")
    return {**push_codes(ctx["params"], ids, codes, encoded["codebook_id"]), "interval_key": ctx["interval_key"]}


def index_new_items(ctx, encoded: dict) -> dict:
    """New items made searchable between retrains: their content-only retrieval vectors (the production model's
    item tower without the id residual they do not have) upserted into the production Milvus collection, under
    item indices after the run's own, named in ``<run>/extra_items.json`` (which serving re-reads). The names are
    written before the vectors, so serving can always name what Milvus returns. Idempotent: an item already
    named keeps its index."""
    if not encoded.get("n_new"):
        return {"indexed": 0, "note": "no new items in the interval", "interval_key": ctx["interval_key"]}
    import torch

    from core.artifacts import write_json_atomic
    from features.item_codes import load_item_codes
    from serving.index import ItemIndex
    from training.train import load_hybrid

    production = ArtifactRoot(ctx["artifact_root"]).production()
    run = RunLayout.at(production["run_dir"])
    ids, _ = load_item_codes(Path(encoded["dir"]) / "item_codes.npz")
    emb = np.load(Path(encoded["dir"]) / "item_embeddings.npy").astype(np.float32)
    base = len(run.read_json(run.item_ids))  # row 0 is padding: the run's items are 1 .. base - 1
    path = run.root / EXTRA_ITEMS
    extra = json.loads(path.read_text()) if path.exists() else {"base": base, "ids": []}
    if int(extra["base"]) != base:
        raise RuntimeError(f"{path}: base {extra['base']} does not match the run's {base} item rows")
    position = {raw: base + j for j, raw in enumerate(extra["ids"])}
    for raw in ids:
        if raw not in position:
            position[raw] = base + len(extra["ids"])
            extra["ids"].append(raw)
    write_json_atomic(path, extra)
    with torch.no_grad():
        vectors = load_hybrid(str(run.root)).item_tower(torch.from_numpy(emb), None).numpy()
    milvus = production["milvus"]
    index = ItemIndex(milvus["uri"], milvus["alias"]).start(load=False)
    try:
        n = index.upsert(np.array([position[raw] for raw in ids], np.int64), vectors,
                         collection=milvus["collection"])  # the production release's, whatever the alias says
    finally:
        index.close()
    return {"indexed": n, "collection": milvus["collection"], "first_index": min(position[r] for r in ids),
            "interval_key": ctx["interval_key"]}
