"""hymirec_retrain end to end with `dag.test()` on small real data (the synthetic generator, small config).

One module-scoped DAG run trains for real and exports: a real ONNX file, a Triton repository version, a
collection in the Milvus standalone server behind the alias, item codes in a Feast SQLite online store, the
registry entry and `current`.
Then: re-running tasks (forced recomputation) leaves byte-identical artifacts; a candidate worse than the
recorded production metrics is rejected by the gate and nothing ships; a second run of the same interval adds
no registry entry and no Triton / Milvus version.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
LOGICAL_DATE = datetime(2026, 3, 1, tzinfo=timezone.utc)
SMALL = {  # whole module < ~3 min on 2 busy cores
    "synthetic": {"n_users": 150, "n_items": 200, "long_users": 2, "long_length": 300},
    "config_overrides": ["item_encoder.finetune_steps=3", "item_encoder.finetune_batch=16", "train.epochs=2",
                         "train.samples_per_user=1", "train_sasrec=false", "hybrid.long_len=64",
                         "hybrid.n_negatives=128"],
    "export_parity_cases": 5,
}


def _tree_hashes(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(exclude)}


def _triton_versions(root: Path) -> dict[str, list[str]]:
    return {t: sorted(p.name for p in (root / "triton" / t / "llm").iterdir() if p.is_dir())
            for t in ("local", "production")}


@pytest.fixture(scope="module")
def retrain(tmp_path_factory, airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    from devservices.milvus_standalone import MilvusStandalone

    tmp = tmp_path_factory.mktemp("retrain")
    store_cfg = tmp / "store.json"
    store_cfg.write_text(json.dumps({"type": "sqlite", "sqlite_path": str(tmp / "feast" / "online.db"),
                                     "registry_path": str(tmp / "feast" / "registry.db")}))
    milvus = MilvusStandalone(tmp / "milvus").start()  # the real Milvus server, as serving runs against
    conf = {"artifact_root": str(tmp / "artifacts"), "dataset": "synthetic", "feast_repo": str(store_cfg),
            "milvus_uri": milvus.uri, "triton_url": "", **SMALL}
    try:
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
        assert bag.import_errors == {}
        dag = bag.get_dag("hymirec_retrain")
        run = dag.test(logical_date=LOGICAL_DATE, run_conf=conf)
        yield {"dag": dag, "run": run, "conf": conf, "root": Path(conf["artifact_root"])}
    finally:
        milvus.stop()


def _ctx(retrain, task: str, **params) -> dict:
    """The StepContext the DAG's tasks got (same interval), for calling a step directly."""
    root = retrain["root"]
    key = next(p.name for p in (root / "intervals").iterdir())
    record = json.loads((root / "intervals" / key / "steps" / "snapshot_training_data.json").read_text())
    start, end = key.split("-")
    iso = lambda s: datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).isoformat()  # noqa: E731
    assert record["result"]["interval_key"] == key
    return {"dag_id": "hymirec_retrain", "task_id": task, "run_id": "rerun", "try_number": 2,
            "interval_start": iso(start), "interval_end": iso(end), "interval_key": key,
            "artifact_root": str(root), "params": {**dict(retrain["dag"].params), **retrain["conf"], **params}}


def _records(retrain) -> dict[str, dict]:
    steps = next((retrain["root"] / "intervals").iterdir()) / "steps"
    return {p.stem: json.loads(p.read_text()) for p in steps.glob("*.json")}


def test_retrain_dag_runs_end_to_end(retrain):
    import onnx
    import onnxruntime as ort

    from core.artifacts import RunLayout
    from features.store import StoreConfig, open_store
    from serving.index import ItemIndex

    assert retrain["run"].state == "success"
    root = retrain["root"]
    registry = json.loads((root / "registry.json").read_text())
    assert registry["production"] == 1 and [m["version"] for m in registry["models"]] == [1]
    entry = registry["models"][0]
    assert entry["interval_key"].startswith("20260301T000000Z")
    assert entry["metrics"]["valid"]["NDCG@10"] > 0 and set(entry["hashes"]) == {"run", "onnx"}

    # current -> the run directory (relative symlink), a complete RunLayout
    assert (root / "current").is_symlink() and not os.path.isabs(os.readlink(root / "current"))
    layout = RunLayout.at(root / "current")
    assert (root / "current").resolve() == Path(entry["run_dir"]).resolve()
    for name, digest in entry["hashes"]["run"].items():
        assert hashlib.sha256((layout.root / name).read_bytes()).hexdigest() == digest, name

    # a real ONNX file (checked and runnable) and version 1 of model "llm" in both Triton repositories
    onnx.checker.check_model(str(layout.llm_onnx))
    ort.InferenceSession(str(layout.encoder_onnx), providers=["CPUExecutionProvider"])
    assert _triton_versions(root) == {"local": ["1"], "production": ["1"]}
    for target in ("local", "production"):
        meta = json.loads((root / "triton" / target / "llm" / "1" / "hymirec.json").read_text())
        assert meta["source_sha256"] == entry["hashes"]["onnx"]["llm.onnx"]
        assert (root / "triton" / target / "llm" / "config.pbtxt").exists()

    # the Milvus Lite collection behind the alias holds the run's item vectors
    import numpy as np

    vectors = np.load(layout.item_vectors)
    index = ItemIndex(retrain["conf"]["milvus_uri"], "hymirec_items").start()
    try:
        assert index.version == entry["milvus"]["collection"] == "hymirec_items_v1"
        ids, _ = index.search(vectors[[5, 17]], 3)
        assert ids[0, 0] == 5 and ids[1, 0] == 17
    finally:
        index.close()

    # every item's codes are in the online store, tagged with the codebook they belong to
    item_ids = json.loads(layout.item_ids.read_text())
    codes = np.load(layout.item_codes)
    with open_store(StoreConfig.from_file(retrain["conf"]["feast_repo"])) as store:
        stored = store.read_item_codes(item_ids[1:])
    assert len(stored) == len(item_ids) - 1
    assert all(np.array_equal(stored[i], codes[n]) for n, i in enumerate(item_ids) if n)
    # the codebook and codes training used are byte-identical to the ones refit_codebook pushed
    records = _records(retrain)
    for name in ("codebook.npz", "item_codes.npy"):
        assert records["train_recommenders"]["hashes"][name] == records["refit_codebook"]["hashes"][name], name


def test_rerunning_tasks_leaves_identical_artifacts(retrain):
    """Forced recomputation (params.recompute) of the data and training tasks reproduces every byte."""
    from orchestration import retrain as pipeline

    root = retrain["root"]
    interval = next((root / "intervals").iterdir())
    before = _tree_hashes(interval, exclude=("metrics.json",))
    registry_before = (root / "registry.json").read_text()
    rec = {k: v["result"] for k, v in _records(retrain).items()}

    snapshot = pipeline.snapshot_training_data(_ctx(retrain, "snapshot_training_data", recompute=True))
    codebook = pipeline.refit_codebook(_ctx(retrain, "refit_codebook", recompute=True), snapshot,
                                       rec["refresh_item_embeddings"])
    run = pipeline.train_recommenders(_ctx(retrain, "train_recommenders", recompute=True), snapshot,
                                      rec["refresh_item_embeddings"], codebook)
    evaluation = pipeline.evaluate_candidate(_ctx(retrain, "evaluate_candidate", recompute=True), run)
    for result, task in ((snapshot, "snapshot_training_data"), (codebook, "refit_codebook"),
                         (run, "train_recommenders"), (evaluation, "evaluate_candidate")):
        assert result["reused"] is False and result["reproduced"] is True, task
        assert result["content_hash"] == rec[task]["content_hash"], task
    after = _tree_hashes(interval, exclude=("metrics.json",))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {f"steps/{t}.json" for t in ("snapshot_training_data", "refit_codebook", "train_recommenders",
                                                   "evaluate_candidate")}, changed  # only the step records (run id, try number)

    # without recompute a re-run reuses the recorded, hash-verified result
    again = pipeline.train_recommenders(_ctx(retrain, "train_recommenders"), snapshot,
                                        rec["refresh_item_embeddings"], codebook)
    assert again["reused"] is True and again["content_hash"] == run["content_hash"]
    assert (root / "registry.json").read_text() == registry_before


def test_worse_candidate_is_rejected_and_a_rerun_adds_no_registry_entry(retrain):
    root = retrain["root"]
    registry_path = root / "registry.json"
    original = registry_path.read_text()
    current = os.readlink(root / "current")

    # production's recorded metrics set far above what the candidate reaches: the gate must reject it
    registry = json.loads(original)
    registry["models"][0]["metrics"]["valid"]["NDCG@10"] = 0.99
    registry_path.write_text(json.dumps(registry))
    rejected = retrain["dag"].test(logical_date=LOGICAL_DATE, run_conf=retrain["conf"])
    states = {ti.task_id: ti.state for ti in rejected.get_task_instances()}
    assert rejected.state == "failed"
    assert states["quality_gate"] == "failed"
    assert {states[t] for t in ("export_model", "rebuild_item_index", "promote")} == {"upstream_failed"}
    verdict = _records(retrain)["quality_gate"]["result"]
    assert verdict["passed"] is False and "< production v1 0.9900" in verdict["reason"]
    assert json.loads(registry_path.read_text()) == registry  # nothing promoted
    assert os.readlink(root / "current") == current and _triton_versions(root)["production"] == ["1"]

    # the same interval again with the real production metrics: passes, reuses everything, no duplicates
    registry_path.write_text(original)
    rerun = retrain["dag"].test(logical_date=LOGICAL_DATE, run_conf=retrain["conf"])
    assert rerun.state == "success"
    assert json.loads(registry_path.read_text()) == json.loads(original)
    assert _triton_versions(root) == {"local": ["1"], "production": ["1"]}
    assert _records(retrain)["rebuild_item_index"]["result"]["collection"] == "hymirec_items_v1"
    assert os.readlink(root / "current") == current


def test_codebook_refresh_encodes_and_publishes_only_new_items(retrain, tmp_path):
    """hymirec_codebook_refresh after the retrain: new items get production-codebook codes in the online store."""
    import numpy as np
    from airflow.dag_processing.dagbag import DagBag

    from core.artifacts import RunLayout
    from features.codebook import ResidualCodebook
    from features.store import StoreConfig, open_store

    layout = RunLayout.at(retrain["root"] / "current")
    known = json.loads(layout.item_ids.read_text())[1]
    items = tmp_path / "arrivals.item"
    items.write_text("item_id:token\ttitle:token_seq\n" + f"{known}\told item\n"
                     + "".join(f"new-{i}\tbrand new gadget number {i}\n" for i in range(3)))
    conf = {"artifact_root": retrain["conf"]["artifact_root"], "item_source": str(items),
            "feast_repo": retrain["conf"]["feast_repo"]}
    dag = DagBag(dag_folder=str(DAGS_FOLDER)).get_dag("hymirec_codebook_refresh")
    assert dag.test(logical_date=LOGICAL_DATE, run_conf=conf).state == "success"

    out = next((retrain["root"] / "refresh").iterdir()) / "new_items"
    with np.load(out / "item_codes.npz") as z:
        assert list(z["item_ids"]) == ["new-0", "new-1", "new-2"]
        codes = z["codes"]
    emb = np.load(out / "item_embeddings.npy")
    assert np.array_equal(codes, ResidualCodebook.load(layout.codebook).encode(emb))
    with open_store(StoreConfig.from_file(conf["feast_repo"])) as store:
        stored = store.read_item_codes(["new-0", "new-1", "new-2"])
    assert all(np.array_equal(stored[f"new-{i}"], codes[i]) for i in range(3))

    first = _tree_hashes(out)
    assert dag.test(logical_date=LOGICAL_DATE, run_conf={**conf, "recompute": True}).state == "success"
    assert _tree_hashes(out) == first  # re-encoding the interval reproduces the same bytes


def test_refreshed_items_are_indexed_and_served_without_a_restart(retrain, tmp_path):
    """After hymirec_codebook_refresh (the test above ran it), the new items are in the production Milvus
    collection under indices after the run's own, named in the run's extra_items.json, and a serving pipeline
    started *before* they were added names and recommends them."""
    import numpy as np
    import torch

    from core.artifacts import RunLayout
    from features.store import StoreConfig, open_store
    from features.store.base import UserState
    from serving.config import ServingConfig
    from serving.index import ItemIndex
    from serving.request_path import RecommendPipeline
    from serving.run_artifacts import EXTRA_ITEMS
    from training.train import load_hybrid

    layout = RunLayout.at(retrain["root"] / "current")
    base = len(json.loads(layout.item_ids.read_text()))
    extra = json.loads((layout.root / EXTRA_ITEMS).read_text())
    assert extra == {"base": base, "ids": ["new-0", "new-1", "new-2"]}

    out = next((retrain["root"] / "refresh").iterdir()) / "new_items"
    with torch.no_grad():
        vectors = load_hybrid(str(layout.root)).item_tower(torch.from_numpy(np.load(out / "item_embeddings.npy")),
                                                           None).numpy()
    index = ItemIndex(retrain["conf"]["milvus_uri"]).start()
    try:  # Bounded consistency: an upsert is searchable once the query node has consumed it (seconds)
        deadline = time.monotonic() + 60
        while True:
            found = [int(index.search(vectors[j:j + 1], 1)[0][0, 0]) for j in range(3)]
            if found == [base, base + 1, base + 2] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert found == [base, base + 1, base + 2]
    finally:
        index.close()

    store_cfg = StoreConfig.from_file(retrain["conf"]["feast_repo"])
    codes = np.load(layout.item_codes)
    with open_store(store_cfg) as store:
        store.write_users([UserState("fresh-user", codes=codes[1:6], recent_items=["new-1"],
                                     recent_times_ms=[1], n_applied=5)])
    config = ServingConfig(artifact_dir=layout.root, triton_url=None, milvus_uri=retrain["conf"]["milvus_uri"],
                           feast_repo=retrain["conf"]["feast_repo"])
    pipeline = RecommendPipeline(config)
    extra_path = layout.root / EXTRA_ITEMS
    saved = extra_path.read_text()
    extra_path.unlink()  # the pipeline starts before the refresh named the new items ...
    try:
        pipeline.start()
        assert pipeline.artifacts.name(base) is None
        extra_path.write_text(saved)  # ... and picks them up on a later request, no restart
        pipeline.artifacts._extra_checked = float("-inf")  # skip the 2 s re-check interval in the test
        everything = pipeline.recommend("fresh-user", k=base + 10, exclude_seen=True)
        assert everything["mode"] == "coarse_only", everything["degraded_reasons"]
        assert {"new-0", "new-2"} <= set(everything["items"])
        assert "new-1" not in everything["items"]  # the user has seen it
        with_seen = pipeline.recommend("fresh-user", k=base + 10, exclude_seen=False)
        assert "new-1" in with_seen["items"]
    finally:
        pipeline.close()
        if not extra_path.exists():
            extra_path.write_text(saved)
