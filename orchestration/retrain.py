"""The step functions of the Airflow DAGs (dags/hymirec_dag_support.STEPS): ``fn(ctx, **upstream) -> dict``.

Each step is one call into the layers (training/, features/, serving/) and is idempotent for its data interval:
artifacts are named by ``ctx["interval_key"]`` (orchestration/artifact_root.py has the layout), written to a
temporary directory and renamed into place, content-hashed, and recorded; re-running a step with the same inputs
returns the recorded result (``params.recompute=true`` recomputes and reports ``reproduced``). Training is
deterministic for a given interval: every seed comes from ``RunConfig.train.seed``.

Params read here (the DAG's declared ones, plus optional run-conf keys):
  dataset            offline interaction source (path or dataset name; "" = "synthetic", the generator in
                     training/datasets/synthetic.py with ``synthetic`` kwargs). The *snapshot* of the interval is
                     every interaction with a timestamp before ``interval_end`` (datasets without real timestamps
                     — order indices — are taken whole), written as RecBole atomic files (.inter + .item).
  config_overrides   ["section.field=value", ...] applied with RunConfig.override (e.g. train.epochs=2)
  quality_metric / quality_margin    the gate (metric names are case-insensitive: "ndcg@10" = "NDCG@10")
  feast_repo         online-store config file (features.store.StoreConfig.from_file); "" = the HYMIREC_STORE_*
                     environment when HYMIREC_STORE_TYPE is set, else item codes are not pushed (reported)
  milvus_uri / milvus_alias          Milvus URI ("" = <artifact_root>/milvus.db, Milvus Lite); alias hymirec_items
  triton_url / triton_target         gRPC host:port of a Triton server in explicit model-control mode ("" = none:
                     promote flips the registry without loading a version); target "local" (python backend, CPU;
                     the default, as in the chart) or "production" (onnxruntime backend, GPU)
  export_parity_cases                ONNX parity cases per model (default 100)
  item_source        hymirec_codebook_refresh: new items (a RecBole .item file or a dataset)
  recompute          recompute instead of reusing recorded step results
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core.artifacts import RunLayout, sha256_file, write_json_atomic
from orchestration.artifact_root import (ArtifactRoot, fingerprint, open_online_store, push_codes, run_recorded,
                                         source_signature)

log = logging.getLogger("orchestration.retrain")

TRITON_MODEL = "llm"


# ---------------------------------------------------------------------------------------------------- helpers
def _root(ctx) -> ArtifactRoot:
    return ArtifactRoot(ctx["artifact_root"])


def _interval(ctx) -> Path:
    return _root(ctx).interval(ctx["interval_key"])


def _config(ctx, dataset: str = "synthetic", run_dir: str = "runs/latest"):
    from training.config import RunConfig

    return RunConfig(dataset=dataset, run_dir=run_dir).override(list(ctx["params"].get("config_overrides") or []))


def _metric(metrics: dict, name: str) -> float:
    lowered = {k.lower(): v for k, v in metrics.items()}
    if name.lower() not in lowered:
        raise KeyError(f"metric {name!r} not in {sorted(metrics)}")
    return float(lowered[name.lower()])


# ---------------------------------------------------------------------------------------------- hymirec_retrain
def snapshot_training_data(ctx) -> dict:
    from datetime import datetime

    from training.data import load_dataset, synthetic

    source = ctx["params"].get("dataset") or "synthetic"
    kwargs = dict(ctx["params"].get("synthetic") or {})
    seed = _config(ctx).train.seed
    cut = int(datetime.fromisoformat(ctx["interval_end"]).timestamp()) if ctx["interval_end"] else None

    def compute(tmp: Path):
        data = synthetic(**{"seed": seed, **kwargs}) if source == "synthetic" else load_dataset(source)
        frame = data.to_frame()
        timed = len(frame) and int(frame["timestamp"].max()) >= 1_000_000_000  # else order indices: no cut
        if cut is not None and timed:
            frame = frame[frame["timestamp"] < cut]
        if frame.empty:
            raise ValueError(f"{source}: no interactions before {ctx['interval_end']}")
        with open(tmp / "snapshot.inter", "w") as f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for u, i, t in zip(frame["user_id"], frame["item_id"], frame["timestamp"]):
                f.write(f"{u}\t{i}\t{int(t)}\n")
        texts = data.item_texts or [""] * len(data.item_ids)
        with open(tmp / "snapshot.item", "w") as f:
            f.write("item_id:token\ttitle:token_seq\n")
            for raw, text in zip(data.item_ids[1:], texts[1:]):
                f.write(f"{raw}\t{' '.join(str(text).split())}\n")
        info = {"source": source, "cut_before": ctx["interval_end"] if timed else None,
                "users": int(frame["user_id"].nunique()), "interactions": int(len(frame)), "has_text": data.has_text}
        return info, ["snapshot.inter", "snapshot.item"]

    inputs = {"source": source_signature(source), "synthetic": kwargs, "seed": seed, "cut": cut}
    return run_recorded(ctx, _interval(ctx) / "snapshot", _interval(ctx) / "steps", inputs, compute)


def refresh_item_embeddings(ctx, snapshot: dict) -> dict:
    """Stage 1 for the interval: training.item_tables.content_item_embeddings (the training run's own stage 1) on the
    snapshot's training split, encoding every item. The encoder weights are kept, so that
    hymirec_codebook_refresh can encode items arriving between retrains in the same embedding space."""
    cfg = _config(ctx, snapshot["dir"])

    def compute(tmp: Path):
        import torch

        from training.data import leave_one_out, load_dataset
        from training.stage2 import pick_device
        from training.item_tables import content_item_embeddings

        data = load_dataset(snapshot["dir"])
        write_json_atomic(tmp / "item_ids.json", data.item_ids)
        if not data.has_text:  # the id embedding is learned by training itself (SASRec table)
            return {"kind": "item_id_embedding", "deferred_to": "train_recommenders"}, ["item_ids.json"]
        torch.manual_seed(cfg.train.seed)
        emb, encoder, record = content_item_embeddings(cfg, data, leave_one_out(data).train,
                                                       pick_device(cfg.train.device), progress=False, log=log.info)
        np.save(tmp / "item_embeddings.npy", emb)
        torch.save({k: v.cpu() for k, v in encoder.state_dict().items()}, tmp / "encoder.pt")
        write_json_atomic(tmp / "encoder.json", {"item_encoder": cfg.to_dict()["item_encoder"], "path": encoder.path})
        return ({"kind": "content_encoder", "finetune_steps": record["finetune"]["steps"], "n_items": data.n_items},
                ["item_ids.json", "item_embeddings.npy", "encoder.pt", "encoder.json"])

    inputs = {"snapshot": snapshot["content_hash"], "item_encoder": cfg.to_dict()["item_encoder"],
              "seed": cfg.train.seed}
    return run_recorded(ctx, _interval(ctx) / "stage1", _interval(ctx) / "steps", inputs, compute)


def refit_codebook(ctx, snapshot: dict, embeddings: dict) -> dict:
    """Refit the residual codebook on the interval's item embeddings. Nothing a reader uses changes here: the
    codes reach the online store only when ``promote`` makes the release current, after the quality gate."""
    cfg = _config(ctx, snapshot["dir"])
    stage1 = Path(embeddings["dir"])
    if embeddings.get("kind") != "content_encoder":
        return {"deferred_to": "train_recommenders", "interval_key": ctx["interval_key"], "content_hash": None}

    def compute(tmp: Path):
        from features.item_codes import save_item_codes
        from training.item_tables import fit_codebook

        emb = np.load(stage1 / "item_embeddings.npy")
        codebook, codes, scales = fit_codebook(emb, cfg.codebook, cfg.train.seed, log=log.info)
        codebook.save(tmp / "codebook.npz")
        np.save(tmp / "item_codes.npy", codes)
        np.save(tmp / "item_scales.npy", scales)
        ids = json.loads((stage1 / "item_ids.json").read_text())
        save_item_codes(tmp / "item_codes_table.npz", ids[1:], codes[1:])  # what the stream processor loads
        report = {k: v for k, v in codebook.report(emb[1:]).items() if not isinstance(v, (dict, list))}
        return {"report": report}, ["codebook.npz", "item_codes.npy", "item_scales.npy", "item_codes_table.npz"]

    inputs = {"embeddings": embeddings["content_hash"], "codebook": cfg.to_dict()["codebook"], "seed": cfg.train.seed}
    return run_recorded(ctx, _interval(ctx) / "codebook", _interval(ctx) / "steps", inputs, compute)


def train_recommenders(ctx, snapshot: dict, embeddings: dict, codebook: dict) -> dict:
    """training.train.run_training on the snapshot into intervals/<key>/run (a RunLayout). Its stage 1 and
    codebook are recomputed with the same seeds, so they match the previous steps byte for byte (checked and
    reported); either way the release is the run's own codebook and codes (what promote pushes)."""
    final = _interval(ctx) / "run"
    cfg = _config(ctx, snapshot["dir"], str(final))

    def compute(tmp: Path):
        from training.train import run_training

        metrics = run_training(_config(ctx, snapshot["dir"], str(tmp)), progress=False, log=log.info)
        layout = RunLayout.at(tmp)
        write_json_atomic(layout.config, cfg.to_dict())  # the run's final location, not the temp directory
        return {"valid_best_ndcg10": metrics["hymirec"]["valid_best_ndcg10"], "test": metrics["hymirec"]["test"],
                "item_representation": metrics["item_representation"]["kind"]}, layout.hashed_files()

    inputs = {"snapshot": snapshot["content_hash"], "codebook": codebook.get("content_hash"), "config": cfg.to_dict()}
    result = run_recorded(ctx, final, _interval(ctx) / "steps", inputs, compute)
    matches = {name: codebook.get("hashes", {}).get(name) == result["hashes"][name]
               for name in ("codebook.npz", "item_codes.npy")}
    result["matches_refit_codebook"] = all(matches.values())
    if not result["matches_refit_codebook"]:
        log.warning("run codebook/codes differ from refit_codebook's %s: the release uses the run's", matches)
    return result


def evaluate_candidate(ctx, run: dict) -> dict:
    """R@K / NDCG@K of the candidate on the validation split (training.stage2.evaluate_hybrid), plus its test
    metrics as recorded by training."""
    def compute(tmp: Path):
        import torch

        from features.codebook import ResidualCodebook
        from training.data import leave_one_out, load_dataset
        from training.stage2 import ItemTables, evaluate_hybrid
        from training.train import load_hybrid

        layout = RunLayout.at(run["dir"])
        config = layout.read_json(layout.config)
        split = leave_one_out(load_dataset(config["dataset"]))
        exact = np.load(layout.item_embeddings)
        decoded = ResidualCodebook.load(layout.codebook).decode(np.load(layout.item_codes)[1:]).astype(np.float32)
        decoded = np.concatenate([np.zeros((1, decoded.shape[1]), np.float32), decoded])
        tables = ItemTables(exact=torch.from_numpy(exact),
                            long=torch.from_numpy(decoded if config["hybrid"]["use_codebook"] else exact))
        with torch.no_grad():
            valid = evaluate_hybrid(load_hybrid(run["dir"]), tables, split.valid, config["train"]["eval_batch"])
        evaluation = {"valid": valid, "test": run["test"], "run_content_hash": run["content_hash"]}
        write_json_atomic(tmp / "evaluation.json", evaluation)
        return evaluation, ["evaluation.json"]

    return run_recorded(ctx, _interval(ctx) / "evaluation", _interval(ctx) / "steps",
                        {"run": run["content_hash"]}, compute)


def quality_gate(ctx, evaluation: dict) -> dict:
    """Compare the candidate's validation metric with the production model's recorded one (registry.json).
    Never raises for a worse model: returns passed=False and the DAG fails the run (production is kept)."""
    name, margin = ctx["params"].get("quality_metric", "ndcg@10"), float(ctx["params"].get("quality_margin", 0.01))
    candidate = _metric(evaluation["valid"], name)
    production = _root(ctx).production()
    verdict = {"metric": name, "margin": margin, "candidate": candidate, "interval_key": ctx["interval_key"],
               "run_content_hash": evaluation["run_content_hash"]}
    if production is None:
        verdict.update(passed=True, production=None, reason="no production model yet")
    else:
        prod = _metric(production["metrics"]["valid"], name)
        passed = candidate >= prod - margin
        verdict.update(passed=passed, production=prod, production_version=production["version"],
                       reason=f"candidate {name} {candidate:.4f} {'>=' if passed else '<'} production "
                              f"v{production['version']} {prod:.4f} - margin {margin}")
    write_json_atomic(_interval(ctx) / "steps" / "quality_gate.json", {"task": "quality_gate", "result": verdict})
    log.info("quality gate: %s", verdict["reason"])
    return verdict


def _triton_versions_with(repo: Path, target: str, onnx_sha: str) -> list[int]:
    from training.export.triton_repo import versions

    found = []
    for v in versions(repo / target, TRITON_MODEL):
        meta = repo / target / TRITON_MODEL / str(v) / "hymirec.json"
        if meta.exists() and json.loads(meta.read_text()).get("source_sha256") == onnx_sha:
            found.append(v)
    return found


def export_model(ctx, run: dict, verdict: dict) -> dict:
    """ONNX export of the run (training.export.export_onnx, parity-checked) and a new version of model "llm" in
    the shared Triton repository <artifact_root>/triton/{local,production}; the same ONNX is never added twice."""
    from training.export import export_onnx
    from training.export.onnx_export import read_manifest
    from training.export.triton_repo import TARGETS, add_version, llm_spec, versions

    if not verdict.get("passed"):
        raise RuntimeError(f"export refused: the quality gate did not pass ({verdict.get('reason')})")
    layout = RunLayout.at(run["dir"])
    record = _interval(ctx) / "steps" / "export_model.json"
    previous = json.loads(record.read_text())["result"] if record.exists() else {}
    onnx_ok = previous.get("run") == run["content_hash"] and all(
        (layout.export_dir / f).exists() and sha256_file(layout.export_dir / f) == h
        for f, h in previous.get("onnx", {}).items())
    if not onnx_ok or ctx["params"].get("recompute"):
        manifest = export_onnx(run["dir"], n_cases=int(ctx["params"].get("export_parity_cases", 100)))
    else:
        manifest = read_manifest(layout.export_dir)
    onnx_hashes = {f: sha256_file(layout.export_dir / f) for f in sorted(manifest["sha256"])}
    llm_sha = onnx_hashes["llm.onnx"]
    dims = manifest["dims"]
    spec = llm_spec(dims["n_coarse"], dims["d_llm"], dims["d_item"], dims["n_interests"], dims["d_out"])
    repo = _root(ctx).triton_repo
    found = {t: _triton_versions_with(repo, t, llm_sha) for t in TARGETS}
    common = sorted(set.intersection(*(set(v) for v in found.values())))
    if common:
        version = common[-1]
    else:
        present = [v[-1] for v in found.values() if v]
        version = present[-1] if present else 1 + max([0] + [v for t in TARGETS for v in versions(repo / t, TRITON_MODEL)])
        for target in TARGETS:
            if version not in found[target]:
                add_version(repo / target, layout.llm_onnx, spec, target=target, version=version)
    result = {"run": run["content_hash"], "onnx": onnx_hashes, "onnx_dir": str(layout.export_dir),
              "parity": {k: v.get("ok", v.get("passed")) for k, v in manifest.get("parity", {}).items()},
              "triton_repo": str(repo), "model": TRITON_MODEL, "version": version, "reused_version": bool(common),
              "interval_key": ctx["interval_key"]}
    write_json_atomic(record, {"task": "export_model", "result": result, "run_id": ctx["run_id"]})
    return result


def rebuild_item_index(ctx, run: dict, export: dict) -> dict:
    """The release's Milvus collection: a new version built from the run's item vectors
    (serving.index.build_run_index), loaded but not behind the alias yet (``promote`` points the alias when the
    release becomes current); reused when the recorded collection from the same vectors still exists."""
    from serving.index import ItemIndex, build_run_index

    uri = ctx["params"].get("milvus_uri") or _root(ctx).default_milvus
    alias = ctx["params"].get("milvus_alias") or "hymirec_items"
    vectors_sha = run["hashes"]["item_vectors.npy"]
    record = _interval(ctx) / "steps" / "rebuild_item_index.json"
    previous = json.loads(record.read_text())["result"] if record.exists() else {}
    if previous.get("key") == fingerprint([uri, alias, vectors_sha]) and not ctx["params"].get("recompute"):
        index = ItemIndex(uri, alias).start(load=False)
        try:
            exists = index.client.has_collection(previous["collection"])
        finally:
            index.close()
        if exists:
            return {**previous, "reused": True}
    reg = _root(ctx).read_registry()  # the served release's collection and its rollback target stay
    keep = tuple(m["milvus"]["collection"] for m in reg["models"]
                 if m["version"] in [reg.get("production"), *reg.get("history", [])[-1:]])
    built = build_run_index(run["dir"], uri, alias, swap_alias=False, keep_also=keep)
    result = {"key": fingerprint([uri, alias, vectors_sha]), "uri": uri, "alias": alias,
              "collection": built.collection, "version": built.version, "n_items": built.n_items, "dim": built.dim,
              "item_vectors_sha256": vectors_sha, "interval_key": ctx["interval_key"]}
    write_json_atomic(record, {"task": "rebuild_item_index", "result": result, "run_id": ctx["run_id"]})
    return {**result, "reused": False}


def promote(ctx, run: dict, evaluation: dict, export: dict, index: dict) -> dict:
    """Make the candidate the current release, as a whole (orchestration/releases.activate): the registry records
    it (one entry per interval + content hash), its item codes reach the online store tagged with its codebook
    id, then Triton loads its LLM version next to the served one, the registry's ``production`` pointer flips
    (serving and the stream processor follow it), ``current`` and the Milvus alias follow, and the old Triton
    version is unloaded after the readers settled."""
    from orchestration.releases import activate

    root = _root(ctx)
    layout = RunLayout.at(run["dir"])
    codebook_id = run["hashes"]["codebook.npz"]
    with root.locked_registry() as reg:
        entry = next((m for m in reg["models"] if m["interval_key"] == ctx["interval_key"]
                      and m["content_hash"] == run["content_hash"]), None)
        if entry is None:
            entry = {"version": int(export["version"]), "interval_key": ctx["interval_key"],
                     "codebook_id": codebook_id,
                     "interval_start": ctx["interval_start"], "interval_end": ctx["interval_end"],
                     "content_hash": run["content_hash"], "run_dir": run["dir"],
                     "stage1_dir": str(_interval(ctx) / "stage1"),
                     "metrics": {"valid": evaluation["valid"], "test": evaluation["test"]},
                     "hashes": {"run": run["hashes"], "onnx": export["onnx"]},
                     "triton": {"repo": export["triton_repo"], "model": export["model"], "version": export["version"]},
                     "milvus": {"uri": index["uri"], "alias": index["alias"], "collection": index["collection"]},
                     "dag_run_id": ctx["run_id"]}
            reg["models"].append(entry)
    # before the flip: a stream processor on the new release finds every item's codes under the new id
    pushed = push_codes(ctx["params"], json.loads(layout.item_ids.read_text())[1:], np.load(layout.item_codes)[1:],
                        codebook_id)
    steps = activate(root.root, entry["version"], triton_url=ctx["params"].get("triton_url") or None,
                     target=ctx["params"].get("triton_target"))
    log.info("promoted release v%s (previous %s)", entry["version"], steps["previous"])
    return {"version": entry["version"], "previous": steps["previous"], "current": steps["current"],
            "codebook_id": codebook_id, "online_store": pushed, "activate": steps, "interval_key": ctx["interval_key"]}


def migrate_histories(ctx, promoted: dict, snapshot: dict) -> dict:
    """After the flip, move the stored histories of the snapshot's users to the new release's codebook
    (orchestration/releases.migrate_to_current: log replay from the snapshot, decode → encode where the log does
    not end with the stored row; compare-and-set next to the live stream processor). Until a row is migrated
    serving decodes it with its own codebook, and the stream processor migrates a user it writes to first."""
    from orchestration.releases import migrate_to_current

    store = open_online_store(ctx["params"])
    if store is None:
        return {"skipped": "no online store configured", "interval_key": ctx["interval_key"]}
    with store:
        result = migrate_to_current(_root(ctx).root, store, Path(snapshot["dir"]) / "snapshot.inter")
    if result["codebook_id"] != promoted["codebook_id"]:  # a rollback or another promote happened meanwhile
        log.warning("current release changed during migration: migrated to %s", result["codebook_id"][:12])
    result["refused_users"] = result["refused_users"][:20]  # XCom stays small
    return {**result, "interval_key": ctx["interval_key"]}
