"""Feast definitions of the HyMiRec online features (self-contained: `feast apply` runs from this folder).

Entities: ``user`` (join key user_id) and ``item`` (join key item_id), both STRING raw ids.

Feature views
* ``item_codes``    codes (L ints per item), written by ``features.producer.write_item_codes`` when the codebook
                    is fitted or refreshed, and by the stream processor for items it encodes on the fly.
* ``user_history``  one row per user, written atomically by the stream processor (read-modify-write):
                    history_codes   Bytes: last <= 1,024 items × L codes, uint16 little-endian, oldest first
                    code_layers     L, history_len  n
                    recent_item_ids last N raw item ids (for the LLM recommender), recent_event_times_ms
                    applied_partitions / applied_offsets  last applied Kafka offset per partition (idempotence)
                    last_event_time_ms, n_applied
                    codebook_id     sha256 hex of the codebook.npz that encoded history_codes ("" in rows
                                    written before codebook versions); serving decodes with that codebook, a
                                    refit migrates rows (features/codebook_migration.py)
  The code history, recent ids and bookkeeping live in one view on purpose: a user's row is then replaced in
  one write, so a crash can never leave history and offsets out of step.

Feature services: ``serving_user_history`` (what the serving adapter reads) and ``stream_bookkeeping``.

Sources: a PushSource per view (offline: Parquet files under offline/), and a KafkaSource + StreamFeatureView that
describe the ``interactions`` topic for the registry and the docs (the processor in features/stream.py is what
actually consumes it).
"""
from __future__ import annotations

import os
import warnings
from datetime import timedelta

from feast import (Entity, FeatureService, FeatureView, Field, FileSource, KafkaSource, PushSource,
                   ValueType)
from feast.data_format import JsonFormat
from feast.stream_feature_view import stream_feature_view
from feast.types import Array, Bytes, Float64, Int64, String

warnings.filterwarnings("ignore", message="Stream feature views are experimental")

TOPIC = os.environ.get("HYMIREC_TOPIC", "interactions")
BOOTSTRAP = os.environ.get("HYMIREC_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
# Offline sources: schema-only Parquet files shipped in offline/ (the offline store is not used for training here).
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "offline")

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="a user, by raw id (the Kafka message key)")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="an item, by raw id")

item_codes_push = PushSource(
    name="item_codes_push",
    batch_source=FileSource(name="item_codes_file", path=os.path.join(_DATA, "item_codes.parquet"),
                            timestamp_field="event_timestamp"),
)
user_history_push = PushSource(
    name="user_history_push",
    batch_source=FileSource(name="user_history_file", path=os.path.join(_DATA, "user_history.parquet"),
                            timestamp_field="event_timestamp"),
)

item_codes = FeatureView(
    name="item_codes",
    entities=[item],
    ttl=timedelta(0),  # never expires: codes change only when the codebook is refitted
    schema=[Field(name="codes", dtype=Array(Int64)),
            Field(name="codebook_id", dtype=String)],
    source=item_codes_push,
    online=True,
    description="residual-codebook codes of an item (L small integers)",
)

user_history = FeatureView(
    name="user_history",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="history_codes", dtype=Bytes),
        Field(name="code_layers", dtype=Int64),
        Field(name="history_len", dtype=Int64),
        Field(name="recent_item_ids", dtype=Array(String)),
        Field(name="recent_event_times_ms", dtype=Array(Int64)),
        Field(name="applied_partitions", dtype=Array(Int64)),
        Field(name="applied_offsets", dtype=Array(Int64)),
        Field(name="last_event_time_ms", dtype=Int64),
        Field(name="n_applied", dtype=Int64),
        Field(name="codebook_id", dtype=String),
    ],
    source=user_history_push,
    online=True,
    description="compressed long history of a user + stream bookkeeping (one atomic row per user)",
)

serving_user_history = FeatureService(
    name="serving_user_history",
    features=[user_history[["history_codes", "code_layers", "history_len", "recent_item_ids", "codebook_id"]]],
    description="what the serving adapter reads per request",
)
stream_bookkeeping = FeatureService(
    name="stream_bookkeeping",
    features=[user_history[["applied_partitions", "applied_offsets", "last_event_time_ms", "n_applied"]]],
    description="idempotence bookkeeping of the stream processor",
)

interactions_stream = KafkaSource(
    name="interactions_stream",
    kafka_bootstrap_servers=BOOTSTRAP,
    topic=TOPIC,
    timestamp_field="event_time",
    message_format=JsonFormat(
        schema_json="schema_version integer, user_id string, item_id string, event_time double, "
                    "event_type string"),
    batch_source=FileSource(name="interactions_file", path=os.path.join(_DATA, "interactions.parquet"),
                            timestamp_field="event_time"),
    description="interaction events (key = user id, JSON value, see core/schemas.py)",
)


@stream_feature_view(
    entities=[user],
    ttl=timedelta(0),
    mode="pandas",
    schema=[Field(name="item_id", dtype=String), Field(name="event_type", dtype=String),
            Field(name="event_time_s", dtype=Float64)],
    timestamp_field="event_time",
    online=False,
    source=interactions_stream,
    description="the raw event stream as Feast sees it (documentation; features/stream.py consumes the topic)",
)
def user_interactions_stream(df):
    df = df.copy()
    df["event_time_s"] = df["event_time"].astype("float64")
    return df


ALL = [user, item, item_codes_push, user_history_push, item_codes, user_history, serving_user_history,
       stream_bookkeeping, interactions_stream, user_interactions_stream]
