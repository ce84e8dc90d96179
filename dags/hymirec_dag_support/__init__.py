"""Thin runtime support shared by the HyMiRec DAG files (stdlib + airflow.sdk only: cheap to parse).

Every task body is one call: ``run_step("<task_id>", **upstream_results)``. It resolves the task's function
from :data:`STEPS` (an import path string, imported lazily inside the running task, so torch/feast/pymilvus
never load at DAG-parse time), builds a :class:`StepContext` for the data interval and calls

    fn(ctx: StepContext, **upstream_results) -> dict      # JSON-serialisable; pushed to XCom

Contract for the step functions (implemented in the layers, wired through ``orchestration.retrain``):
- idempotent per data interval: the same ``ctx["interval_key"]`` must produce the same artifacts
  (content-hashed) and no duplicate registry entries, so Airflow retries and clears are safe;
- artifacts go under ``ctx["artifact_root"]`` (versioned directories + the small registry file);
- raise on failure (Airflow retries with back-off); the quality gate does not raise but returns
  ``{"passed": bool, "reason": str, ...}`` and the DAG fails the run without retries when it did not pass.
"""
from __future__ import annotations

import importlib
import os
from datetime import datetime, timedelta
from typing import Any, Callable, TypedDict

# task_id -> "module:function". One table, so the wiring can be read (and changed) in one place.
STEPS: dict[str, str] = {
    # hymirec_retrain
    "snapshot_training_data": "orchestration.retrain:snapshot_training_data",
    "refresh_item_embeddings": "orchestration.retrain:refresh_item_embeddings",
    "refit_codebook": "orchestration.retrain:refit_codebook",
    "train_recommenders": "orchestration.retrain:train_recommenders",
    "evaluate_candidate": "orchestration.retrain:evaluate_candidate",
    "quality_gate": "orchestration.retrain:quality_gate",
    "export_model": "orchestration.retrain:export_model",
    "rebuild_item_index": "orchestration.retrain:rebuild_item_index",
    "promote": "orchestration.retrain:promote",
    "migrate_histories": "orchestration.retrain:migrate_histories",
    # hymirec_codebook_refresh
    "encode_new_items": "orchestration.refresh:encode_new_items",
    "index_new_items": "orchestration.refresh:index_new_items",
    "publish_item_codes": "orchestration.refresh:publish_item_codes",
}

DEFAULT_ARTIFACT_ROOT = "/opt/airflow/hymirec-artifacts"

# Retries with back-off for every task; long steps get a longer execution_timeout in the DAG files.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "hymirec",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=1),
}


class StepContext(TypedDict):
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    interval_start: str  # ISO 8601, UTC
    interval_end: str  # ISO 8601, UTC
    interval_key: str  # "20260101T000000Z-20260102T000000Z": names the interval's artifact directories
    artifact_root: str
    params: dict[str, Any]


def env_default(name: str, default: Any) -> Any:
    """A DAG param default from the worker environment (set by the Airflow chart's env), else ``default``."""
    return os.environ.get(name) or default


def common_params() -> dict[str, Any]:
    """Params shared by both DAGs (plain values; airflow.sdk.Param objects are built in the DAG files)."""
    return {
        "artifact_root": env_default("HYMIREC_ARTIFACT_DIR", DEFAULT_ARTIFACT_ROOT),
        "feast_repo": env_default("HYMIREC_FEAST_REPO", ""),
        "milvus_uri": env_default("HYMIREC_MILVUS_URI", ""),
        "triton_url": env_default("HYMIREC_TRITON_URL", ""),
    }


def resolve_step(step: str) -> Callable[..., dict]:
    """Import the function wired to ``step`` (only ever called inside a running task)."""
    try:
        target = STEPS[step]
    except KeyError:
        raise KeyError(f"no step function wired for task {step!r}; known: {sorted(STEPS)}") from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{target}: module {module_name!r} has no function {attr!r}") from None


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _key(value: datetime | None) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ") if value is not None else "none"


def build_context(airflow_context: dict[str, Any], task_id: str) -> StepContext:
    ti = airflow_context["ti"]
    start = airflow_context.get("data_interval_start")
    end = airflow_context.get("data_interval_end")
    if start is None or end is None:  # manual runs without a schedule interval
        logical = airflow_context.get("logical_date")
        start = start or logical
        end = end or logical
    params = dict(airflow_context.get("params") or {})
    return StepContext(
        dag_id=ti.dag_id,
        task_id=task_id,
        run_id=airflow_context["run_id"],
        try_number=int(getattr(ti, "try_number", 1) or 1),
        interval_start=_iso(start),
        interval_end=_iso(end),
        interval_key=f"{_key(start)}-{_key(end)}",
        artifact_root=str(params.get("artifact_root") or DEFAULT_ARTIFACT_ROOT),
        params=params,
    )


def run_step(step: str, **inputs: Any) -> dict:
    """Body of every task: call the wired function with the interval's context and the upstream results."""
    from airflow.sdk import get_current_context

    ctx = build_context(get_current_context(), step)
    result = resolve_step(step)(ctx, **inputs)
    if result is None:
        result = {}
    if not isinstance(result, dict):
        raise TypeError(f"{STEPS[step]} must return a dict (XCom), got {type(result).__name__}")
    return result
