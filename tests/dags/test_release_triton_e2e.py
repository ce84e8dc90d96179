"""Two retrains promoted as whole releases into a real tritonserver and Milvus server, then a rollback, while one
serving pipeline (started once, following HYMIREC_RELEASE_ROOT's registry) answers requests under load
(issue 27, deliverables 3, 4 and 6).

Each answer names its release, its Triton LLM version, its Milvus collection and the codebook its history was
decoded with; none may mix two releases, degrade, or decode a history with a codebook other than its own.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from test_retrain_e2e import DAGS_FOLDER, SMALL

pytestmark = [pytest.mark.services, pytest.mark.slow]
FIRST = datetime(2026, 4, 1, tzinfo=timezone.utc)
USERS = ("release-user-0", "release-user-1", "release-user-2")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, airflow_home):
    from devservices.milvus_standalone import MilvusStandalone
    from serving.triton_server import TritonServer

    tmp = tmp_path_factory.mktemp("release")
    repo = tmp / "artifacts" / "triton" / "local"
    repo.mkdir(parents=True)  # empty until the first export; the server loads what promote tells it to
    store_cfg = tmp / "store.json"
    store_cfg.write_text(json.dumps({"type": "sqlite", "sqlite_path": str(tmp / "feast" / "online.db"),
                                     "registry_path": str(tmp / "feast" / "registry.db")}))
    milvus = MilvusStandalone(tmp / "milvus").start()
    triton = TritonServer(repo, [], log_path=tmp / "triton.log").start()
    try:
        conf = {"artifact_root": str(tmp / "artifacts"), "dataset": "synthetic", "feast_repo": str(store_cfg),
                "milvus_uri": milvus.uri, "triton_url": triton.grpc_url, **SMALL}
        yield {"conf": conf, "repo": repo, "triton": triton, "root": Path(conf["artifact_root"])}
    finally:
        triton.stop()
        milvus.stop()


def _retrain(stack, logical_date, seed: int) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS_FOLDER)).get_dag("hymirec_retrain")
    conf = {**stack["conf"], "config_overrides": SMALL["config_overrides"] + [f"train.seed={seed}"]}
    run = dag.test(logical_date=logical_date, run_conf=conf)
    assert run.state == "success"
    return json.loads((stack["root"] / "registry.json").read_text())


def _write_users(stack) -> str:
    """Users whose histories are encoded with the current release's codebook (as the stream processor writes)."""
    from core.artifacts import RunLayout
    from core.releases import current_release
    from features.store import StoreConfig, open_store
    from features.store.base import UserState

    release = current_release(stack["root"])
    layout = RunLayout.at(release.run_dir)
    codes = np.load(layout.item_codes)
    ids = json.loads(layout.item_ids.read_text())
    with open_store(StoreConfig.from_file(stack["conf"]["feast_repo"])) as store:
        store.write_users([UserState(u, codes=codes[1 + 5 * n: 12 + 5 * n], recent_items=ids[1 + n: 4 + n],
                                     recent_times_ms=[1, 2, 3], n_applied=11, codebook_id=release.codebook_id)
                           for n, u in enumerate(USERS)])
    return release.codebook_id


def _write_snapshot_users(stack, n: int = 4) -> dict:
    """Rows of users the retrain's snapshot knows (the migrate step's users), on the current release's codebook."""
    from core.artifacts import RunLayout
    from core.releases import current_release
    from features.store import StoreConfig, open_store
    from features.store.base import UserState
    from orchestration.releases import logged_items

    release = current_release(stack["root"])
    layout = RunLayout.at(release.run_dir)
    table = dict(zip(json.loads(layout.item_ids.read_text()), np.load(layout.item_codes)))
    log = logged_items(next((stack["root"] / "intervals").glob("*/snapshot/snapshot.inter")))
    rows = [UserState(u, codes=np.stack([table[i] for i in items[-20:]]), recent_items=items[-5:],
                      recent_times_ms=list(range(5)), n_applied=20, codebook_id=release.codebook_id)
            for u, items in list(log.items())[:n]]
    with open_store(StoreConfig.from_file(stack["conf"]["feast_repo"])) as store:
        store.write_users(rows)
    return {r.user_id: r for r in rows}


class Load:
    """Requests from two threads until stopped; every answer is kept."""

    def __init__(self, pipeline):
        self.pipeline, self.answers, self._stop = pipeline, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(2)]

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            self.answers.append(self.pipeline.recommend(USERS[i % len(USERS)], k=10))
            i += 1
            time.sleep(0.01)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _wait_for_release(pipeline, version: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = pipeline.recommend(USERS[0], k=10)
        if answer["release"] == version:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"serving did not switch to release {version} within {timeout}s")


def _check(answers, registry, row_codebook: str) -> dict:
    """Every answer from one release: its LLM version and collection; its history decoded with its own codebook."""
    parts = {m["version"]: (f"llm/{m['triton']['version']}", m["milvus"]["collection"]) for m in registry["models"]}
    mixed = [a for a in answers if (a["model_version"]["llm"], a["index_version"]) != parts[a["release"]]]
    degraded = [a for a in answers if a["degraded"] or a["mode"] != "full"]
    mismatched = [a for a in answers if a["history_codebook"] != row_codebook]
    assert not degraded, degraded[0]["degraded_reasons"]
    assert not mixed, (mixed[0]["release"], mixed[0]["model_version"], mixed[0]["index_version"])
    assert not mismatched, mismatched[0]["history_codebook"]
    return {"requests": len(answers), "releases": sorted({a["release"] for a in answers})}


def test_releases_promote_and_roll_back_whole_under_load(stack):
    from orchestration.releases import rollback
    from serving.config import ServingConfig
    from serving.index import ItemIndex
    from serving.request_path import RecommendPipeline

    first = _retrain(stack, FIRST, seed=0)
    assert first["production"] == 1 and first["history"] == []
    row_codebook = _write_users(stack)
    quiet = _write_snapshot_users(stack)
    pipeline = RecommendPipeline(ServingConfig(release_root=stack["root"], artifact_dir=stack["root"] / "current",
                                               triton_url=stack["triton"].grpc_url,
                                               milvus_uri=stack["conf"]["milvus_uri"],
                                               feast_repo=stack["conf"]["feast_repo"], triton_timeout_s=10.0,
                                               release_poll_s=0.5))
    pipeline.start()
    try:
        answer = pipeline.recommend(USERS[0], k=10)
        assert (answer["release"], answer["model_version"]["llm"]) == (1, "llm/1")
        assert answer["index_version"] == first["models"][0]["milvus"]["collection"]

        with Load(pipeline) as load:  # the second retrain, its promote and the switch, under load
            second = _retrain(stack, FIRST + timedelta(days=1), seed=1)
            _wait_for_release(pipeline, 2)
            time.sleep(1.0)
        assert second["production"] == 2 and second["history"] == [1]
        assert second["models"][1]["codebook_id"] != row_codebook  # a refit: the stored rows are release 1's
        from features.store import StoreConfig, open_store

        with open_store(StoreConfig.from_file(stack["conf"]["feast_repo"])) as store:
            migrated = store.read_users(list(quiet))
        for user, before in quiet.items():  # migrate_histories moved the snapshot's users to the new codebook
            after = migrated[user]
            assert after.codebook_id == second["models"][1]["codebook_id"]
            assert after.codes.shape == before.codes.shape and after.recent_items == before.recent_items
        seen = _check(load.answers, second, row_codebook)
        assert seen["releases"] == [1, 2] and seen["requests"] > 20, seen
        assert stack["triton"].control.ready_versions("llm") == [2]  # v1 unloaded after the readers settled
        index = ItemIndex(stack["conf"]["milvus_uri"], "hymirec_items").start()
        try:
            assert index.version == second["models"][1]["milvus"]["collection"]  # the alias followed
        finally:
            index.close()

        with Load(pipeline) as load:  # rollback: the whole previous release, under load
            rollback(stack["root"], triton_url=stack["triton"].grpc_url)
            _wait_for_release(pipeline, 1)
            time.sleep(1.0)
        seen = _check(load.answers, second, row_codebook)
        assert seen["releases"] == [1, 2] or seen["releases"] == [1], seen
    finally:
        pipeline.close()
    registry = json.loads((stack["root"] / "registry.json").read_text())
    assert registry["production"] == 1 and registry["history"] == []
    assert stack["triton"].control.ready_versions("llm") == [1]
    assert (stack["root"] / "current").resolve() == Path(registry["models"][0]["run_dir"]).resolve()

    # a restarted Triton that loads what its repository's config says (the chart's --load-model=*) comes back on
    # the rolled-back release's version, not on the newest version on disk
    from training.export.triton_repo import pinned_versions

    assert pinned_versions(stack["repo"], "llm") == [1]
    stack["triton"].stop()
    stack["triton"].models = []
    stack["triton"].start()
    stack["triton"].control.client.load_model("llm")  # no version override: the on-disk policy
    assert stack["triton"].control.ready_versions("llm") == [1]
