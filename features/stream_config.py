"""Configuration of the stream processor (StreamConfig) and the broker reachability probe."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from core.schemas import MAX_EVENT_BYTES

from .item_codes import StreamConfigError
from .kafka_security import KafkaSecurity
from .stream_health import DEFAULT_STALL_S

DEFAULT_TOPIC = "interactions"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


@dataclass
class StreamConfig:
    bootstrap: str = DEFAULT_BOOTSTRAP
    topic: str = DEFAULT_TOPIC
    dlq_topic: str | None = None           # default: <topic>.dlq
    group_id: str = "hymirec-stream"
    group_instance_id: str | None = None   # static membership: a restarted process takes its partitions back at once
    client_id: str = "hymirec-stream"
    max_poll_records: int = 500
    poll_timeout_ms: int = 200
    max_event_bytes: int = MAX_EVENT_BYTES
    check_key: bool = True
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    bootstrap_timeout_s: float = 10.0
    # A failed store call (Redis down or restarting) is retried with exponential backoff (retry_backoff_s doubling,
    # capped at retry_backoff_max_s) for up to store_retry_s; then the processor exits 1. Nothing of the batch is
    # committed meanwhile, so an outage shorter than store_retry_s only delays events.
    store_retry_s: float = 60.0
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 5.0
    dlq_flush_timeout_s: float = 30.0
    idle_exit_s: float | None = None       # exit once caught up and idle this long (replays, tests, benchmarks)
    max_runtime_s: float | None = None
    metrics_port: int | None = None
    liveness_stall_s: float = DEFAULT_STALL_S  # /live fails after this long without progress while lag > 0
    # Off: topics are created by `hymirec stream create-topics` (partitions, replication); a processor started on
    # a missing topic fails with a configuration error instead of inventing one with the wrong layout.
    create_topics: bool = False
    partitions: int = 4                    # used only when create_topics is on
    replication: int = 1
    security: KafkaSecurity = field(default_factory=KafkaSecurity)  # TLS / SASL (features/kafka_security.py)
    # Items missing from the processor's item-codes table are looked up in the store's item-codes view, where the
    # codebook-refresh DAG publishes new items between retrains; an id found nowhere is asked again after
    # unknown_recheck_s (its events go to the DLQ as unknown_item meanwhile).
    published_codes: bool = True
    unknown_recheck_s: float = 10.0

    @property
    def dlq(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    def validate(self) -> "StreamConfig":
        if not self.bootstrap or any(":" not in b for b in self.bootstrap.split(",")):
            raise StreamConfigError(f"bootstrap must be host:port[,host:port...], got {self.bootstrap!r}")
        if not self.topic or self.topic == self.dlq:
            raise StreamConfigError("topic must be set and differ from the DLQ topic")
        if self.store_retry_s < 0 or self.retry_backoff_s <= 0 or self.liveness_stall_s <= 0:
            raise StreamConfigError("store_retry_s must be >= 0, retry_backoff_s and liveness_stall_s > 0")
        if self.unknown_recheck_s < 0:
            raise StreamConfigError(f"unknown_recheck_s must be >= 0, got {self.unknown_recheck_s}")
        self.security = self.security.validate()  # fills in the default SASL mechanism
        if self.max_poll_records < 1:
            raise StreamConfigError("max_poll_records must be >= 1")
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms <= self.max_poll_interval_ms:
            raise StreamConfigError(
                "need 0 < heartbeat_interval_ms < session_timeout_ms <= max_poll_interval_ms, got "
                f"{self.heartbeat_interval_ms}, {self.session_timeout_ms}, {self.max_poll_interval_ms}")
        return self


def probe_bootstrap(bootstrap: str, timeout_s: float = 3.0) -> str:
    """Return the first bootstrap address that accepts a TCP connection, else raise StreamConfigError."""
    errors = []
    for addr in bootstrap.split(","):
        host, _, port = addr.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return addr.strip()
        except (OSError, ValueError) as exc:
            errors.append(f"{addr}: {exc}")
    raise StreamConfigError(f"no Kafka broker reachable at {bootstrap} ({'; '.join(errors)})")
