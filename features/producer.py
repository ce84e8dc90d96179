"""Publishing interaction events: a small producer helper, topic creation, and the dataset replay.

Topics are never created implicitly (the broker's auto-creation is off too): :func:`create_topics`, which
``hymirec stream create-topics`` runs, makes the events topic and its DLQ with the given partitions and
replication factor, and :func:`replay` refuses a topic that does not exist.

:func:`replay` publishes a dataset's interactions in time order (ties keep the dataset's per-user order), key =
user id, value = the versioned JSON event of core.schemas. It is what ``hymirec stream replay`` runs, and what
the demo and the benchmarks use.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd

from core.schemas import EventType, InteractionEvent, encode_event

from .item_codes import StreamConfigError
from .kafka_import import import_kafka
from .kafka_security import KafkaSecurity, connect_error, remember_broker_failures, security_kwargs

log = logging.getLogger("hymirec.producer")


def make_producer(bootstrap: str, security: KafkaSecurity | None = None, **overrides: Any):
    """KafkaProducer tuned for ordered, durable event publishing (acks=all, one in-flight request per
    connection, so a retry can never reorder a user's events)."""
    import_kafka()
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    config = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=10, batch_size=256 * 1024,
                  max_in_flight_requests_per_connection=1, retries=10, bootstrap_timeout_ms=10000,
                  **security_kwargs(security))
    config.update(overrides)
    try:
        with remember_broker_failures():
            return KafkaProducer(**config)
    except KafkaError as exc:
        raise connect_error(bootstrap, security or KafkaSecurity(), exc) from None


def _admin(bootstrap: str, timeout_s: float, security: KafkaSecurity | None):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError
    try:
        with remember_broker_failures():
            return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="hymirec-admin",
                                    bootstrap_timeout_ms=int(timeout_s * 1000), **security_kwargs(security))
    except KafkaError as exc:
        raise connect_error(bootstrap, security or KafkaSecurity(), exc) from None


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int = 4, replication: int = 1,
                  timeout_s: float = 10.0, security: KafkaSecurity | None = None) -> list[str]:
    """Create the topics that do not exist yet (and wait until they have leaders); returns the ones created.
    Topics that exist are left as they are (their partition count is not changed)."""
    import_kafka()
    from kafka.errors import KafkaError, TopicAlreadyExistsError
    if partitions < 1 or replication < 1:
        raise StreamConfigError(f"partitions and replication factor must be >= 1, got {partitions}, {replication}")
    admin = _admin(bootstrap, timeout_s, security)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics({t: {"num_partitions": partitions, "replication_factor": replication}
                                     for t in missing}, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:  # created concurrently by another client
                pass
            except KafkaError as exc:  # e.g. a replication factor above the number of brokers
                raise StreamConfigError(f"cannot create topics {missing} on {bootstrap} ({partitions} partitions, "
                                        f"replication factor {replication}): {type(exc).__name__}: {exc}") from exc
        return missing
    finally:
        admin.close()


def create_topics(bootstrap: str, topic: str = "interactions", partitions: int = 4, replication: int = 1,
                  dlq_topic: str | None = None, timeout_s: float = 10.0,
                  security: KafkaSecurity | None = None) -> dict:
    """What ``hymirec stream create-topics`` runs: the events topic and its DLQ (``<topic>.dlq``). The broker
    does not create topics on first use (auto-creation is off), so this runs before the first replay or
    processor. Returns {"created": [...], "existing": [...], "partitions", "replication_factor"}."""
    names = [topic, dlq_topic or f"{topic}.dlq"]
    created = ensure_topics(bootstrap, names, partitions=partitions, replication=replication, timeout_s=timeout_s,
                            security=security)
    return {"created": created, "existing": [t for t in names if t not in created], "partitions": partitions,
            "replication_factor": replication}


def require_topic(bootstrap: str, topic: str, timeout_s: float = 10.0, security: KafkaSecurity | None = None) -> None:
    """StreamConfigError unless ``topic`` exists: with auto-creation off, a producer would otherwise block for
    its max_block_ms on the first send and then fail with a timeout that does not say why."""
    import_kafka()
    admin = _admin(bootstrap, timeout_s, security)
    try:
        if topic not in set(admin.list_topics()):
            raise StreamConfigError(f"topic {topic!r} does not exist on {bootstrap}: create it with "
                                    f"`hymirec stream create-topics --bootstrap {bootstrap} --topic {topic}` "
                                    "(auto-creation is off)")
    finally:
        admin.close()


def publish_events(producer: Any, topic: str, events: Iterable[InteractionEvent], flush: bool = True,
                   rate: float | None = None) -> int:
    """Send events (key = user id). ``rate`` caps events per second. Returns the number sent."""
    n = 0
    start = time.monotonic()
    for ev in events:
        key, value = encode_event(ev)
        producer.send(topic, key=key, value=value)
        n += 1
        if rate and n % 100 == 0:
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    if flush:
        producer.flush()
    return n


def publish_raw(producer: Any, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]],
                flush: bool = True) -> int:
    """Send raw (key, value) pairs as they are (tests, poison messages)."""
    n = 0
    for key, value in messages:
        producer.send(topic, key=key, value=value)
        n += 1
    if flush:
        producer.flush()
    return n


def frame_events(frame: pd.DataFrame, event_type: str = EventType.interaction.value) -> Iterator[InteractionEvent]:
    """Events of an interactions frame (columns user_id, item_id, timestamp[, order][, event_type]) in time
    order; ties keep the per-user order (``order`` column) then the frame's row order."""
    cols = {"user_id", "item_id", "timestamp"}
    if not cols <= set(frame.columns):
        raise ValueError(f"frame needs columns {sorted(cols)}, has {list(frame.columns)}")
    df = frame.reset_index(drop=True)
    sort_cols = ["timestamp"] + (["order"] if "order" in df.columns else [])
    df = df.sort_values(sort_cols, kind="mergesort")
    types = df["event_type"] if "event_type" in df.columns else None
    for k, (u, i, t) in enumerate(zip(df["user_id"].to_numpy(), df["item_id"].to_numpy(),
                                      df["timestamp"].to_numpy())):
        yield InteractionEvent.make(u, i, float(t), types.iloc[k] if types is not None else event_type)


def dataset_frame(dataset: Any) -> pd.DataFrame:
    """An interactions frame, or anything with ``to_frame()`` (training's InteractionData) → interactions frame.

    Loading a dataset by name is the caller's job (the CLI passes training.data.load_dataset to
    :func:`features.stream_cli.main`): features sits below training and never imports it.
    """
    if isinstance(dataset, pd.DataFrame):
        return dataset
    if hasattr(dataset, "to_frame"):
        return dataset.to_frame()
    raise TypeError(f"replay needs an interactions frame or a loaded dataset, not {type(dataset).__name__}")


def replay(dataset: Any, bootstrap: str, topic: str = "interactions", limit: int | None = None,
           rate: float | None = None, producer: Any = None, security: KafkaSecurity | None = None) -> dict:
    """Publish a dataset's interactions in time order to an existing topic (see :func:`create_topics`).
    Returns {"events", "users", "seconds", "events_per_s"}."""
    frame = dataset_frame(dataset)
    require_topic(bootstrap, topic, security=security)
    own = producer is None
    producer = producer or make_producer(bootstrap, security)
    events = frame_events(frame)
    if limit is not None:
        events = itertools.islice(events, limit)
    users: set[str] = set()

    def counted() -> Iterator[InteractionEvent]:
        for ev in events:
            users.add(ev.user_id)
            yield ev

    start = time.monotonic()
    try:
        n = publish_events(producer, topic, counted(), rate=rate)
    finally:
        if own:
            producer.close(timeout=10)
    seconds = time.monotonic() - start
    log.info("replayed %d events of %d users to %s in %.2fs", n, len(users), topic, seconds)
    return {"events": n, "users": len(users), "topic": topic, "seconds": round(seconds, 3),
            "events_per_s": round(n / seconds, 1) if seconds > 0 else None}
