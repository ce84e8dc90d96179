"""Two retrains promoted into a real tritonserver, then a rollback (issue 27, deliverable 6, the Triton part).

The DAG's promote step rolls the new LLM version out on the running server (load N+1, then unload N); the serving
pipeline, reading `current`, the Milvus standalone server and the online store, answers from version 1 after the
first retrain, from version 2 after the second, and from version 1 again after `rollback`. The Milvus alias and
`current` are not rolled back by it (a whole-release rollback is issue 27's deliverable 3).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from test_retrain_e2e import DAGS_FOLDER, SMALL

pytestmark = [pytest.mark.services, pytest.mark.slow]
FIRST = datetime(2026, 4, 1, tzinfo=timezone.utc)


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


def _served_version(stack) -> tuple[str, str]:
    """(LLM version, index version) a fresh serving pipeline answers with, for a user in the store."""
    from core.artifacts import RunLayout
    from features.store import StoreConfig, open_store
    from features.store.base import UserState
    from serving.config import ServingConfig
    from serving.request_path import RecommendPipeline

    layout = RunLayout.at(stack["root"] / "current")
    codes = np.load(layout.item_codes)
    recent = json.loads(layout.item_ids.read_text())[1:4]
    with open_store(StoreConfig.from_file(stack["conf"]["feast_repo"])) as store:
        store.write_users([UserState("release-user", codes=codes[1:9], recent_items=recent,
                                     recent_times_ms=[1, 2, 3], n_applied=8)])
    pipeline = RecommendPipeline(ServingConfig(artifact_dir=layout.root, triton_url=stack["triton"].grpc_url,
                                               milvus_uri=stack["conf"]["milvus_uri"],
                                               feast_repo=stack["conf"]["feast_repo"], triton_timeout_s=10.0))
    try:
        pipeline.start()
        result = pipeline.recommend("release-user", k=10)
    finally:
        pipeline.close()
    assert result["mode"] == "full" and len(result["items"]) == 10, result["degraded_reasons"]
    return result["model_version"]["llm"], result["index_version"]


def test_promote_serves_the_new_version_and_rollback_the_old_one(stack):
    from serving.triton_server import rollback

    first = _retrain(stack, FIRST, seed=0)
    assert first["production"] == 1
    llm, index = _served_version(stack)
    assert llm == "llm/1" and index == first["models"][0]["milvus"]["collection"]

    second = _retrain(stack, FIRST + timedelta(days=1), seed=1)
    assert second["production"] == 2
    assert stack["triton"].control.ready_versions("llm") == [2]  # v1 unloaded after v2 was ready
    llm, index = _served_version(stack)
    assert llm == "llm/2" and index == second["models"][1]["milvus"]["collection"]

    rollback(stack["repo"], "llm", stack["triton"].grpc_url)
    assert stack["triton"].control.ready_versions("llm") == [1]
    assert _served_version(stack)[0] == "llm/1"
