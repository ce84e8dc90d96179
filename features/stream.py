"""Stream processor: Kafka ``interactions`` → residual-codebook codes → per-user history in the online store.

Loop (one consumer of a kafka-python consumer group, ``enable_auto_commit=False``)::

    poll a batch → validate (core.schemas) → map item → codes (item-codes table; unknown items encoded on the
    fly from their embedding when one is available, else DLQ ``unknown_item``) → collapse the batch per user →
    read the users' rows → apply (features.store.apply_events) → write the changed rows → flush the DLQ →
    commit the batch's offsets

Offsets are committed only after the store write and the DLQ flush succeeded, so a crash anywhere re-delivers
the batch; the per-user applied (partition, offset) in the row makes the re-delivered events no-ops
(at-least-once delivery + idempotent apply = each event applied exactly once). The DLQ is at-least-once: after a
crash the same bad message can appear twice (its ``dlq.source_*`` headers identify it).

SIGTERM / SIGINT: the current batch is finished (written + committed), then the consumer leaves the group and
the process exits 0. SIGUSR1: every thread's stack is printed to stderr and the processor goes on.

Command line: features/stream_cli.py (the ``hymirec stream`` sub-commands)::

    python -m features.stream_cli run --bootstrap 127.0.0.1:19092 --item-codes runs/<id> [--store sqlite|redis] ...
    python -m features.stream_cli replay --dataset <name or path> --bootstrap 127.0.0.1:19092 [--limit N] [--rate R]
    python -m features.stream_cli show --user <id> [--store ...]

Exit codes: 0 done, 1 runtime failure (store or DLQ unavailable after retries), 2 bad configuration (unknown store
type, no broker reachable, unreadable item-codes table). Nothing is written when the configuration is bad.
"""
from __future__ import annotations

import faulthandler
import logging
import signal
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .item_codes import ItemCodeMapper, StreamConfigError
from .kafka_import import import_kafka
from core.schemas import MAX_EVENT_BYTES, BadEvent, parse_event
from .store.base import OnlineStore, StateEvent, StoreError, UserState, apply_events
from .stream_metrics import StreamMetrics

log = logging.getLogger("hymirec.stream")

DEFAULT_TOPIC = "interactions"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


class DLQError(RuntimeError):
    """The DLQ topic did not acknowledge a dead letter: the batch is not committed (exit code 1)."""


# ---------------------------------------------------------------------------------------------------------------
# the processor


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
    write_retries: int = 3
    retry_backoff_s: float = 0.5
    dlq_flush_timeout_s: float = 30.0
    idle_exit_s: float | None = None       # exit once caught up and idle this long (replays, tests, benchmarks)
    max_runtime_s: float | None = None
    metrics_port: int | None = None
    create_topics: bool = True
    partitions: int = 4                    # used only when the processor creates missing topics

    @property
    def dlq(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    def validate(self) -> "StreamConfig":
        if not self.bootstrap or any(":" not in b for b in self.bootstrap.split(",")):
            raise StreamConfigError(f"bootstrap must be host:port[,host:port...], got {self.bootstrap!r}")
        if not self.topic or self.topic == self.dlq:
            raise StreamConfigError("topic must be set and differ from the DLQ topic")
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


@dataclass
class BatchResult:
    events_in: int = 0
    applied: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"already_applied": 0, "duplicate": 0})
    dlq: dict[str, int] = field(default_factory=dict)
    users_written: int = 0
    write_seconds: float = 0.0


class StreamProcessor:
    """One consumer. ``consumer`` / ``dlq_producer`` are created from ``config`` unless given."""

    def __init__(self, config: StreamConfig, store: OnlineStore, mapper: ItemCodeMapper,
                 metrics: StreamMetrics | None = None, consumer: Any = None, dlq_producer: Any = None):
        self.cfg = config.validate()
        self.store = store
        self.mapper = mapper
        self.metrics = metrics or StreamMetrics()
        self.max_history = getattr(getattr(store, "config", None), "max_history", 1024)
        self.recent_n = getattr(getattr(store, "config", None), "recent_n", 50)
        self._stop = False
        self._consumer = consumer
        self._producer = dlq_producer
        self.totals = BatchResult()

    # ---- kafka clients ------------------------------------------------------------------------------------
    def _make_clients(self) -> None:
        import_kafka()
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError
        c = self.cfg
        try:
            if c.create_topics:
                from .producer import ensure_topics
                ensure_topics(c.bootstrap, [c.topic, c.dlq], partitions=c.partitions,
                              timeout_s=c.bootstrap_timeout_s)
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=c.bootstrap, client_id=f"{c.client_id}-dlq", acks="all", linger_ms=5,
                    retries=5, bootstrap_timeout_ms=int(c.bootstrap_timeout_s * 1000))
            if self._consumer is None:
                kw = dict(
                    bootstrap_servers=c.bootstrap, group_id=c.group_id, client_id=c.client_id,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    max_poll_records=c.max_poll_records, session_timeout_ms=c.session_timeout_ms,
                    heartbeat_interval_ms=c.heartbeat_interval_ms, max_poll_interval_ms=c.max_poll_interval_ms,
                    fetch_max_wait_ms=100, bootstrap_timeout_ms=int(c.bootstrap_timeout_s * 1000))
                if c.group_instance_id:
                    kw["group_instance_id"] = c.group_instance_id
                self._consumer = KafkaConsumer(**kw)
                self._wait_for_topic_metadata()
                self._consumer.subscribe([c.topic])
        except KafkaError as exc:
            raise StreamConfigError(f"cannot connect to Kafka at {c.bootstrap}: {type(exc).__name__}: {exc}") from exc

    def _wait_for_topic_metadata(self) -> None:
        # Without the topic's partitions in the consumer's metadata, the group leader can compute an empty
        # assignment ("No partition metadata for topic") and the consumer idles until the next metadata refresh.
        deadline = time.monotonic() + self.cfg.bootstrap_timeout_s
        while not self._consumer.partitions_for_topic(self.cfg.topic):
            if time.monotonic() > deadline:
                raise StreamConfigError(f"topic {self.cfg.topic!r} has no partitions on {self.cfg.bootstrap} "
                                        "(create it, or leave create_topics on)")
            time.sleep(0.1)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        # SIGUSR1 prints every thread's stack to stderr and the processor goes on: how to see where a stuck
        # processor (alive, not polling, not committing) waits, without stopping it.
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def run(self) -> BatchResult:
        """Consume until stopped (signal, ``idle_exit_s``, ``max_runtime_s``); returns the totals."""
        self._make_clients()
        if self.cfg.metrics_port:
            self.metrics.serve(self.cfg.metrics_port)
        start = time.monotonic()
        idle_since: float | None = None
        announced = False
        try:
            while not self._stop:
                batch = self._consumer.poll(timeout_ms=self.cfg.poll_timeout_ms,
                                            max_records=self.cfg.max_poll_records)
                if not announced and self._consumer.assignment():
                    announced = True
                    log.info("assigned %s", sorted(tp.partition for tp in self._consumer.assignment()))
                    print("stream: assigned", flush=True)
                if batch:
                    idle_since = None
                    self.process(batch)
                else:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if (self.cfg.idle_exit_s is not None and announced
                            and now - idle_since >= self.cfg.idle_exit_s and self._caught_up()):
                        log.info("caught up and idle for %.1fs: stopping", now - idle_since)
                        break
                self._update_lag()
                if self.cfg.max_runtime_s is not None and time.monotonic() - start >= self.cfg.max_runtime_s:
                    break
        finally:
            self.close()
        return self.totals

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # pragma: no cover - best effort on shutdown
                log.warning("consumer close: %s", exc)
            self._consumer = None
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.cfg.dlq_flush_timeout_s)
                self._producer.close(timeout=5)
            except Exception as exc:  # pragma: no cover
                log.warning("dlq producer close: %s", exc)
            self._producer = None

    def _caught_up(self) -> bool:
        parts = list(self._consumer.assignment())
        if not parts:
            return False
        ends = self._consumer.end_offsets(parts)
        return all(self._consumer.position(tp) >= ends.get(tp, 0) for tp in parts)

    def _update_lag(self) -> None:
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is None:
                continue
            try:
                pos = self._consumer.position(tp, timeout_ms=100)
            except Exception:
                continue
            if pos is not None:
                self.metrics.set_lag(tp.partition, max(hw - pos, 0))

    # ---- one batch ----------------------------------------------------------------------------------------
    def _send_dlq(self, rec: Any, exc: BadEvent):
        headers = [
            ("dlq.reason", exc.reason.encode()),
            ("dlq.error_class", exc.error_class.encode()),
            ("dlq.error_message", str(exc.detail)[:1024].encode("utf-8", "replace")),
            ("dlq.source_topic", rec.topic.encode()),
            ("dlq.source_partition", str(rec.partition).encode()),
            ("dlq.source_offset", str(rec.offset).encode()),
            ("dlq.processor", self.cfg.group_id.encode()),
        ]
        return self._producer.send(self.cfg.dlq, key=rec.key, value=rec.value, headers=headers)

    def _with_retry(self, what: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.cfg.write_retries + 1):
            try:
                return fn()
            except StoreError as exc:
                if attempt == self.cfg.write_retries:
                    raise
                log.warning("%s failed (attempt %d): %s", what, attempt + 1, exc)
                time.sleep(self.cfg.retry_backoff_s * (2 ** attempt))

    def process(self, batch: Mapping[Any, Sequence[Any]]) -> BatchResult:
        """Validate, map, write and commit one poll result {TopicPartition: [ConsumerRecord]}."""
        from kafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError
        from kafka.structs import OffsetAndMetadata
        t0 = time.perf_counter()
        res = BatchResult(dlq=defaultdict(int))
        dead: list[tuple[Any, BadEvent]] = []
        valid: list[tuple[Any, Any]] = []
        for records in batch.values():
            for rec in records:
                res.events_in += 1
                try:
                    valid.append((rec, parse_event(rec.value, rec.key, self.cfg.max_event_bytes,
                                                   self.cfg.check_key)))
                except BadEvent as exc:
                    dead.append((rec, exc))
        codes = self.mapper.lookup(ev.item_id for _, ev in valid)
        per_user: dict[str, list[StateEvent]] = defaultdict(list)
        ts_by_user: dict[str, list[int]] = defaultdict(list)
        for rec, ev in valid:
            row = codes.get(ev.item_id)
            if row is None:
                dead.append((rec, BadEvent("unknown_item", f"item {ev.item_id[:64]!r} has no codes and no "
                                                           "embedding to encode it from")))
                continue
            per_user[ev.user_id].append(StateEvent(rec.partition, rec.offset, ev.item_id, ev.event_time_ms, row))
            ts_by_user[ev.user_id].append(rec.timestamp)
        futures = [self._send_dlq(rec, exc) for rec, exc in dead]

        new_items = self.mapper.pop_new()
        if new_items:
            try:
                self._with_retry("item codes write", lambda: self.store.write_item_codes(
                    list(new_items), np.stack(list(new_items.values()))))
            except StoreError:
                self.mapper.push_back(new_items)
                raise
            self.metrics.encoded.inc(len(new_items))

        tw = time.perf_counter()
        changed: list[UserState] = []
        applied_users: list[str] = []
        if per_user:
            states = self._with_retry("store read", lambda: self.store.read_users(list(per_user)))
            for uid, events in per_user.items():
                st = states.get(uid) or UserState(uid, codes=np.zeros((0, self.mapper.n_layers), np.uint16))
                new_st, n_applied, skipped = apply_events(st, events, self.max_history, self.recent_n)
                res.applied += n_applied
                for k, v in skipped.items():
                    res.skipped[k] += v
                if new_st is not st:
                    changed.append(new_st)
                if n_applied:
                    applied_users.append(uid)
            if changed:
                self._with_retry("store write", lambda: self.store.write_users(changed))
        res.write_seconds = time.perf_counter() - tw
        res.users_written = len(changed)
        written_at = time.time()

        if futures:
            self._producer.flush(timeout=self.cfg.dlq_flush_timeout_s)
            for fut, (rec, exc) in zip(futures, dead):
                try:
                    fut.get(timeout=0)
                except Exception as err:
                    raise DLQError(f"DLQ {self.cfg.dlq} did not acknowledge offset {rec.partition}:{rec.offset}: "
                                   f"{type(err).__name__}: {err}") from err
                res.dlq[exc.reason] += 1

        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                   for tp, records in batch.items() if records}
        try:
            self._consumer.commit(offsets)
        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError) as exc:
            # the partitions moved during the batch: the new owner re-reads these records and skips them
            self.metrics.commit_failures.inc()
            log.warning("offset commit refused (%s); records will be re-read and skipped", exc)

        m = self.metrics
        m.events_in.inc(res.events_in)
        m.applied.inc(res.applied)
        for k, v in res.skipped.items():
            if v:
                m.skipped.labels(reason=k).inc(v)
        for k, v in res.dlq.items():
            m.dlq.labels(reason=k).inc(v)
        m.batches.inc()
        m.write_seconds.observe(res.write_seconds)
        for uid in applied_users:
            for ts in ts_by_user[uid]:
                if ts is not None and ts > 0:
                    m.record_to_store.observe(max(written_at - ts / 1000.0, 0.0))
        m.batch_seconds.observe(time.perf_counter() - t0)
        self._accumulate(res)
        return res

    def _accumulate(self, res: BatchResult) -> None:
        t = self.totals
        t.events_in += res.events_in
        t.applied += res.applied
        t.users_written += res.users_written
        t.write_seconds += res.write_seconds
        for k, v in res.skipped.items():
            t.skipped[k] = t.skipped.get(k, 0) + v
        for k, v in res.dlq.items():
            t.dlq[k] = t.dlq.get(k, 0) + v
