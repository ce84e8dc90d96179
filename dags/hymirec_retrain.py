"""hymirec_retrain: the scheduled retraining pipeline (daily).

snapshot_training_data -> refresh_item_embeddings -> refit_codebook -> train_recommenders -> evaluate_candidate
-> quality_gate -> export_model -> rebuild_item_index -> promote -> migrate_histories

Each task is one call into the layers (see hymirec_dag_support.STEPS for the function each task runs); nothing
heavy is imported while the file is parsed. Every step is idempotent for its data interval, so retries and
clears are safe. The quality gate compares the candidate's validation metrics with the production model's
recorded ones: if the candidate is worse by more than `quality_margin`, the run fails (no retries) before
anything is exported, and production keeps serving the previous model. Nothing readers use changes before
`promote`, which makes the release current as a whole (orchestration/releases.py); `migrate_histories` then moves
the stored user histories to the new codebook.
"""
from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import Param, dag, task

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the dag-processor puts the bundle on sys.path; a bare DagBag does not
    sys.path.append(_HERE)

from hymirec_dag_support import DEFAULT_ARGS, common_params, env_default, run_step  # noqa: E402

_defaults = common_params()


@dag(
    dag_id="hymirec_retrain",
    description="Snapshot -> embeddings -> codebook -> train -> evaluate -> gate -> export -> index -> promote "
                "-> migrate",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # one candidate at a time: promote swaps shared production state
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=12),
    tags=["hymirec", "training"],
    doc_md=__doc__,
    params={
        "artifact_root": Param(_defaults["artifact_root"], type="string",
                               description="Versioned artifact directory (registry file + runs)."),
        "dataset": Param(env_default("HYMIREC_DATASET", ""), type="string",
                         description="Offline interaction source to snapshot (path or dataset name)."),
        "quality_metric": Param("ndcg@10", type="string", description="Metric the quality gate compares."),
        "quality_margin": Param(0.01, type="number", minimum=0,
                                description="Reject the candidate if worse than production by more than this "
                                            "(absolute) on quality_metric."),
        "feast_repo": Param(_defaults["feast_repo"], type="string"),
        "milvus_uri": Param(_defaults["milvus_uri"], type="string"),
        "triton_url": Param(_defaults["triton_url"], type="string"),
    },
)
def hymirec_retrain():
    @task
    def snapshot_training_data() -> dict:
        return run_step("snapshot_training_data")

    @task
    def refresh_item_embeddings(snapshot: dict) -> dict:
        return run_step("refresh_item_embeddings", snapshot=snapshot)

    @task
    def refit_codebook(snapshot: dict, embeddings: dict) -> dict:
        return run_step("refit_codebook", snapshot=snapshot, embeddings=embeddings)

    @task(execution_timeout=timedelta(hours=6))
    def train_recommenders(snapshot: dict, embeddings: dict, codebook: dict) -> dict:
        return run_step("train_recommenders", snapshot=snapshot, embeddings=embeddings, codebook=codebook)

    @task(execution_timeout=timedelta(hours=2))
    def evaluate_candidate(run: dict) -> dict:
        return run_step("evaluate_candidate", run=run)

    @task(retries=0)
    def quality_gate(evaluation: dict) -> dict:
        verdict = run_step("quality_gate", evaluation=evaluation)
        if not verdict.get("passed"):
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"quality gate rejected the candidate: {verdict.get('reason', 'no reason given')}; "
                "production keeps the current model")
        return verdict

    @task
    def export_model(run: dict, verdict: dict) -> dict:
        return run_step("export_model", run=run, verdict=verdict)

    @task
    def rebuild_item_index(run: dict, export: dict) -> dict:
        return run_step("rebuild_item_index", run=run, export=export)

    @task
    def promote(run: dict, evaluation: dict, export: dict, index: dict) -> dict:
        return run_step("promote", run=run, evaluation=evaluation, export=export, index=index)

    @task(execution_timeout=timedelta(hours=3))
    def migrate_histories(promoted: dict, snapshot: dict) -> dict:
        return run_step("migrate_histories", promoted=promoted, snapshot=snapshot)

    snapshot = snapshot_training_data()
    embeddings = refresh_item_embeddings(snapshot)
    codebook = refit_codebook(snapshot, embeddings)
    run = train_recommenders(snapshot, embeddings, codebook)
    evaluation = evaluate_candidate(run)
    verdict = quality_gate(evaluation)
    export = export_model(run, verdict)
    index = rebuild_item_index(run, export)
    migrate_histories(promote(run, evaluation, export, index), snapshot)


hymirec_retrain()
