"""The DAG files: they import fast with no errors and no heavy imports, and they are wired as documented."""
from __future__ import annotations

import ast
import importlib.util
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
HEAVY = ("torch", "transformers", "feast", "pymilvus", "milvus_lite", "kafka", "onnxruntime", "onnx",
         "tritonclient", "training", "serving", "features", "orchestration.retrain", "pandas", "numpy")
RETRAIN_ORDER = ["snapshot_training_data", "refresh_item_embeddings", "refit_codebook", "train_recommenders",
                 "evaluate_candidate", "quality_gate", "export_model", "rebuild_item_index", "promote",
                 "migrate_histories"]


@pytest.fixture(scope="module")
def dagbag_and_time():
    from airflow.dag_processing.dagbag import DagBag

    before = set(sys.modules)
    start = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    elapsed = time.perf_counter() - start
    return bag, elapsed, set(sys.modules) - before


@pytest.fixture(scope="module")
def dagbag(dagbag_and_time):
    return dagbag_and_time[0]


@pytest.fixture(scope="module")
def support(dagbag):
    # the same module object the DAG files imported (they put dags/ on sys.path)
    return sys.modules["hymirec_dag_support"]


def test_dagbag_imports_with_zero_errors_in_under_2s(dagbag_and_time):
    bag, elapsed, _ = dagbag_and_time
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"hymirec_retrain", "hymirec_codebook_refresh"}
    assert elapsed < 2.0, f"DagBag fill took {elapsed:.2f}s"


def test_no_heavy_imports_at_parse_time(dagbag_and_time):
    _, _, new_modules = dagbag_and_time
    loaded = sorted(m for m in new_modules if m.split(".")[0] in HEAVY or m in HEAVY)
    assert loaded == []
    allowed = {"__future__", "sys", "os", "importlib", "typing", "datetime", "pathlib", "airflow.sdk",
               "hymirec_dag_support"}
    files = sorted(DAGS_FOLDER.glob("*.py")) + sorted((DAGS_FOLDER / "hymirec_dag_support").glob("*.py"))
    for path in files:
        for node in ast.parse(path.read_text()).body:  # module top level only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name in allowed, f"{path.name}: top-level import of {name}"


def test_retrain_dag_shape(dagbag):
    dag = dagbag.get_dag("hymirec_retrain")
    assert [t.task_id for t in dag.topological_sort()] == RETRAIN_ORDER
    for upstream, downstream in zip(RETRAIN_ORDER, RETRAIN_ORDER[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # nothing ships unless the gate passed
    for task_id in ("export_model", "rebuild_item_index", "promote", "migrate_histories"):
        assert "quality_gate" in dag.get_task(task_id).get_flat_relative_ids(upstream=True)
        assert dag.get_task(task_id).trigger_rule == "all_success"
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.params["quality_margin"] >= 0
    for task in dag.tasks:
        expected = 0 if task.task_id == "quality_gate" else 2
        assert task.retries == expected, task.task_id
        assert task.execution_timeout is not None
    assert dag.get_task("train_recommenders").execution_timeout == timedelta(hours=6)


def test_codebook_refresh_dag_shape(dagbag):
    dag = dagbag.get_dag("hymirec_codebook_refresh")
    assert {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} == {
        "encode_new_items": [], "publish_item_codes": ["encode_new_items"], "index_new_items": ["encode_new_items"]}
    assert all(t.retries == 2 for t in dag.tasks)
    assert dag.max_active_runs == 1 and dag.catchup is False


def test_every_task_is_wired_to_a_step(dagbag, support):
    task_ids = {t.task_id for dag in dagbag.dags.values() for t in dag.tasks}
    assert task_ids == set(support.STEPS)
    for target in support.STEPS.values():
        module, _, function = target.partition(":")
        assert module and function.isidentifier(), target


@pytest.mark.skipif(importlib.util.find_spec("orchestration.retrain") is None,
                    reason="orchestration/retrain.py (the step functions) is not written yet")
def test_wired_step_functions_exist(support):
    for step in support.STEPS:
        assert callable(support.resolve_step(step)), step


# --------------------------------------------------------------------------- task bodies with stub steps

class _TI:
    dag_id = "hymirec_retrain"
    try_number = 1


def _context(params):
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    return {"ti": _TI(), "run_id": "scheduled__2026-03-02", "data_interval_start": start,
            "data_interval_end": start + timedelta(days=1), "params": params}


@pytest.fixture
def stub_steps(monkeypatch, support, dagbag):
    """Point every step at a recording stub and give run_step a fake Airflow context."""
    import airflow.sdk

    calls = []
    verdict = {"passed": True, "reason": "candidate ndcg@10 0.31 >= production 0.30 - 0.01"}
    module = type(sys)("hymirec_test_stub_steps")

    def make(step):
        def fn(ctx, **inputs):
            calls.append((step, ctx, inputs))
            return dict(verdict) if step == "quality_gate" else {"step": step}
        return fn

    for step in support.STEPS:
        setattr(module, step, make(step))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(support, "STEPS", {s: f"{module.__name__}:{s}" for s in support.STEPS})
    params = dict(dagbag.get_dag("hymirec_retrain").params)
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: _context(params), raising=False)
    return calls, verdict


def test_task_bodies_call_their_step_with_the_interval_context(stub_steps, dagbag):
    calls, _ = stub_steps
    dag = dagbag.get_dag("hymirec_retrain")
    out = dag.get_task("refit_codebook").python_callable(snapshot={"s": 1}, embeddings={"e": 2})
    assert out == {"step": "refit_codebook"}
    ((step, ctx, inputs),) = calls
    assert step == "refit_codebook" and inputs == {"snapshot": {"s": 1}, "embeddings": {"e": 2}}
    assert ctx["interval_key"] == "20260301T000000Z-20260302T000000Z"
    assert ctx["interval_start"] == "2026-03-01T00:00:00+00:00"
    assert ctx["artifact_root"] == dag.params["artifact_root"]
    assert ctx["params"]["quality_metric"] == "ndcg@10"


def test_quality_gate_fails_the_run_when_the_candidate_is_worse(stub_steps, dagbag):
    from airflow.sdk.exceptions import AirflowFailException

    _, verdict = stub_steps
    gate = dagbag.get_dag("hymirec_retrain").get_task("quality_gate")
    assert gate.python_callable(evaluation={"metrics": {}})["passed"] is True
    verdict.update(passed=False, reason="candidate ndcg@10 0.25 < production 0.30 - 0.01")
    with pytest.raises(AirflowFailException, match="production keeps the current model"):
        gate.python_callable(evaluation={"metrics": {}})


def test_a_step_must_return_a_dict(monkeypatch, support):
    import airflow.sdk

    module = type(sys)("hymirec_test_bad_step")
    module.bad = lambda ctx: ["not", "a", "dict"]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(support.STEPS, "bad", f"{module.__name__}:bad")
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: _context({}), raising=False)
    with pytest.raises(TypeError, match="must return a dict"):
        support.run_step("bad")
    with pytest.raises(KeyError, match="no step function wired"):
        support.resolve_step("nope")
