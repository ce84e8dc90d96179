"""The stream processor's Kafka clients: the consumer of the group and the DLQ producer, built from StreamConfig,
and the check that the topics exist (auto-creation is off: `hymirec stream create-topics` makes them)."""
from __future__ import annotations

import time
from typing import Any

from .item_codes import StreamConfigError
from .kafka_import import import_kafka
from .kafka_security import connect_error, remember_broker_failures


def make_clients(c: Any, consumer: Any = None, producer: Any = None) -> tuple[Any, Any]:
    """(consumer subscribed to c.topic, DLQ producer); the given ones are kept. Raises StreamConfigError when
    the broker cannot be reached or a topic is missing."""
    import_kafka()
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError
    sec = c.security.client_kwargs()
    with remember_broker_failures():
        try:
            if c.create_topics:
                from .producer import ensure_topics
                ensure_topics(c.bootstrap, [c.topic, c.dlq], partitions=c.partitions, replication=c.replication,
                              timeout_s=c.bootstrap_timeout_s, security=c.security)
            if producer is None:
                producer = KafkaProducer(
                    bootstrap_servers=c.bootstrap, client_id=f"{c.client_id}-dlq", acks="all", linger_ms=5,
                    retries=5, bootstrap_timeout_ms=int(c.bootstrap_timeout_s * 1000), **sec)
            if consumer is None:
                kw = dict(
                    bootstrap_servers=c.bootstrap, group_id=c.group_id, client_id=c.client_id,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    max_poll_records=c.max_poll_records, session_timeout_ms=c.session_timeout_ms,
                    heartbeat_interval_ms=c.heartbeat_interval_ms, max_poll_interval_ms=c.max_poll_interval_ms,
                    fetch_max_wait_ms=100, bootstrap_timeout_ms=int(c.bootstrap_timeout_s * 1000), **sec)
                if c.group_instance_id:
                    kw["group_instance_id"] = c.group_instance_id
                consumer = KafkaConsumer(**kw)
                wait_for_topics(consumer, [c.topic, c.dlq], c.bootstrap, c.bootstrap_timeout_s)
                consumer.subscribe([c.topic])
        except KafkaError as exc:
            raise connect_error(c.bootstrap, c.security, exc) from None
    return consumer, producer


def wait_for_topics(consumer: Any, topics: list[str], bootstrap: str, timeout_s: float) -> None:
    # Without the topic's partitions in the consumer's metadata, the group leader can compute an empty
    # assignment ("No partition metadata for topic") and the consumer idles until the next metadata refresh.
    # The DLQ topic is checked too: with auto-creation off a dead letter to a missing topic would block the
    # batch for the producer's max_block_ms, then fail it.
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [t for t in topics if not consumer.partitions_for_topic(t)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise StreamConfigError(
                f"topic(s) {', '.join(map(repr, missing))} missing on {bootstrap}: create them with "
                f"`hymirec stream create-topics --bootstrap {bootstrap} --topic {topics[0]} --partitions N "
                "--replication-factor R` (auto-creation is off)")
        time.sleep(0.2)
