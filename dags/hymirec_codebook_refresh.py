"""hymirec_codebook_refresh: encode newly arrived items and publish their codes to the feature store (hourly).

encode_new_items -> publish_item_codes (the stream processor picks the codes up from the store)
                 -> index_new_items (upsert into the production Milvus collection; serving names them)

Uses the production codebook from the artifact registry (no refit: that is hymirec_retrain's job), so codes of
existing items never change between retrains. Idempotent per data interval: the items that arrived in the
interval are encoded to a content-hashed file and publishing the same codes twice writes the same values.
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
    dag_id="hymirec_codebook_refresh",
    description="Encode newly arrived items with the production codebook and publish their codes",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "execution_timeout": timedelta(minutes=30)},
    dagrun_timeout=timedelta(hours=1),
    tags=["hymirec", "features"],
    doc_md=__doc__,
    params={
        "artifact_root": Param(_defaults["artifact_root"], type="string",
                               description="Versioned artifact directory (registry file + runs)."),
        "item_source": Param(env_default("HYMIREC_ITEM_SOURCE", ""), type="string",
                             description="Where new items (ids + text) arrive (path or dataset name)."),
        "feast_repo": Param(_defaults["feast_repo"], type="string"),
    },
)
def hymirec_codebook_refresh():
    @task
    def encode_new_items() -> dict:
        return run_step("encode_new_items")

    @task
    def publish_item_codes(encoded: dict) -> dict:
        return run_step("publish_item_codes", encoded=encoded)

    @task
    def index_new_items(encoded: dict) -> dict:
        return run_step("index_new_items", encoded=encoded)

    encoded = encode_new_items()
    publish_item_codes(encoded)
    index_new_items(encoded)


hymirec_codebook_refresh()
