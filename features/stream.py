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
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from core.schemas import BadEvent, parse_event

from .item_codes import ItemCodeMapper, StreamConfigError  # noqa: F401  (re-exported)
from .store.base import OnlineStore, StateEvent, StoreError, UserState, apply_events
from .stream_config import DEFAULT_BOOTSTRAP, DEFAULT_TOPIC, StreamConfig, probe_bootstrap  # noqa: F401
from .stream_health import Liveness
from .stream_metrics import StreamMetrics

log = logging.getLogger("hymirec.stream")

class DLQError(RuntimeError):
    """The DLQ topic did not acknowledge a dead letter: the batch is not committed (exit code 1)."""


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
                 metrics: StreamMetrics | None = None, consumer: Any = None, dlq_producer: Any = None,
                 release: Any = None):
        self.cfg = config.validate()
        self.store = store
        # features.stream_release.ReleaseTracker (--release-root): item codes and codebook of the current release
        self.release = release
        self._use_mapper(mapper)
        self.metrics = metrics or StreamMetrics()
        self.liveness = Liveness(self.cfg.liveness_stall_s)
        self.max_history = getattr(getattr(store, "config", None), "max_history", 1024)
        self.recent_n = getattr(getattr(store, "config", None), "recent_n", 50)
        self._stop = False
        self._consumer = consumer
        self._producer = dlq_producer
        self._health_server: Any = None
        self.totals = BatchResult()
        # Test seam: called between the read-apply and the store write of a batch. The fencing and liveness
        # tests stall a consumer there (past max.poll.interval.ms) to play a consumer that lost its partitions.
        self.before_write: Callable[[], None] | None = None

    def _use_mapper(self, mapper: ItemCodeMapper) -> None:
        if self.cfg.published_codes and mapper.published is None:
            # new items the codebook-refresh DAG publishes to the store between retrains are applied at once,
            # when they were encoded with the codebook this processor writes (never another release's codes)
            codebook_id = self.codebook_id
            mapper.published = lambda ids: self.store.read_item_codes(ids, codebook_id=codebook_id or None)
            mapper.recheck_s = self.cfg.unknown_recheck_s
        self.mapper = mapper

    @property
    def codebook_id(self) -> str:
        return self.release.codebook_id if self.release is not None else ""

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
        from .stream_kafka import make_clients
        self._consumer, self._producer = make_clients(self.cfg, self._consumer, self._producer)
        if self.cfg.metrics_port:
            from .stream_health import serve
            self._health_server = serve(self.cfg.metrics_port, self.metrics, self.liveness)
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
                    self.liveness.batch_started()
                    self.process(batch)
                    self.liveness.batch_done()
                    self.liveness.set_lag(self._update_lag())
                else:
                    self.liveness.idle(self._update_lag())
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if (self.cfg.idle_exit_s is not None and announced
                            and now - idle_since >= self.cfg.idle_exit_s and self._caught_up()):
                        log.info("caught up and idle for %.1fs: stopping", now - idle_since)
                        break
                if self.cfg.max_runtime_s is not None and time.monotonic() - start >= self.cfg.max_runtime_s:
                    break
        finally:
            self.close()
        return self.totals

    def close(self) -> None:
        if self._health_server is not None:
            self._health_server.shutdown()
            self._health_server.server_close()
            self._health_server = None
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

    def _update_lag(self) -> int:
        """Set the lag gauges of the assigned partitions; returns their total (0 when none is assigned)."""
        total = 0
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
                total += max(hw - pos, 0)
        return total

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
        """fn() until it stops raising StoreError, with capped exponential backoff, for up to store_retry_s."""
        start, attempt = time.monotonic(), 0
        while True:
            try:
                out = fn()
            except StoreError as exc:  # its message is scrubbed of secrets by the store
                attempt += 1
                spent = time.monotonic() - start
                if spent >= self.cfg.store_retry_s:
                    log.error("%s failed %d times in %.1f s, giving up (exit 1); this batch is not committed and "
                              "will be re-read: %s", what, attempt, spent, exc)
                    raise
                delay = min(self.cfg.retry_backoff_s * 2 ** (attempt - 1), self.cfg.retry_backoff_max_s)
                log.warning("%s failed (attempt %d, %.1f s so far, giving up after %g s): %s; retrying in %.1f s, "
                            "offsets not committed", what, attempt, spent, self.cfg.store_retry_s, exc, delay)
                self.metrics.store_retries.inc()
                time.sleep(delay)
                continue
            if attempt:
                log.warning("%s succeeded after %d failed attempts (%.1f s)", what, attempt,
                            time.monotonic() - start)
            return out

    def _apply_and_write(self, per_user: dict[str, list[StateEvent]], last_offset: dict[int, int]) -> dict:
        """Read the users' rows, apply the events, write the changed rows fenced by the partitions' offsets.
        Retried as a whole: after a failed call whose write landed anyway, the re-read finds the events applied."""
        states = self.store.read_users(list(per_user))
        parts: dict[int, tuple[int, list[UserState]]] = {}
        outcome = {"applied": {}, "skipped": defaultdict(int), "written": 0, "fenced": 0}
        part_of: dict[str, int] = {}
        for uid, events in per_user.items():
            base = states.get(uid) or UserState(uid, codes=np.zeros((0, self.mapper.n_layers), np.uint16),
                                                codebook_id=self.codebook_id)
            # a history stored under an older release's codebook is re-encoded first (written even when every
            # event of the batch was a replay, so the row then carries the current codebook)
            st = self.release.migrate(base) if self.release is not None else base
            new_st, n_applied, skipped = apply_events(st, events, self.max_history, self.recent_n,
                                                      codebook_id=self.codebook_id or None)
            # key = user id, so a user's events come from one partition (the fence is taken per partition)
            part_of[uid] = max(e.partition for e in events)
            outcome["applied"][uid] = (n_applied, skipped)
            if new_st is not base:
                parts.setdefault(part_of[uid], (last_offset[part_of[uid]], []))[1].append(new_st)
        if self.before_write is not None:
            self.before_write()
        refused = self.store.write_users_fenced(self.cfg.topic, parts) if parts else set()
        for p in sorted(refused):
            log.warning("partition %d: the store holds a later offset than this batch's %d: another consumer owns "
                        "the partition now; %d rows not written", p, parts[p][0], len(parts[p][1]))
        outcome["written"] = sum(len(rows) for p, (_, rows) in parts.items() if p not in refused)
        for uid, (n_applied, skipped) in list(outcome["applied"].items()):
            if part_of[uid] in refused:
                outcome["fenced"] += len(per_user[uid])
                del outcome["applied"][uid]
                continue
            for k, v in skipped.items():
                outcome["skipped"][k] += v
        return outcome

    def process(self, batch: Mapping[Any, Sequence[Any]]) -> BatchResult:
        """Validate, map, write and commit one poll result {TopicPartition: [ConsumerRecord]}."""
        from kafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError
        from kafka.structs import OffsetAndMetadata
        t0 = time.perf_counter()
        if self.release is not None:
            switched = self.release.poll()  # a registry flip: this batch already uses the new release
            if switched is not None:
                self._use_mapper(switched)
                self.metrics.release_switches.inc()
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
        item_ids = [ev.item_id for _, ev in valid]
        codes = self._with_retry("item codes read", lambda: self.mapper.lookup(item_ids))
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
        applied_users: list[str] = []
        if per_user:
            last_offset = {tp.partition: max(r.offset for r in records) for tp, records in batch.items() if records}
            out = self._with_retry("store read-modify-write", lambda: self._apply_and_write(per_user, last_offset))
            for uid, (n_applied, _) in out["applied"].items():
                res.applied += n_applied
                if n_applied:
                    applied_users.append(uid)
            for k, v in out["skipped"].items():
                res.skipped[k] = res.skipped.get(k, 0) + v
            if out["fenced"]:
                res.skipped["fenced"] = out["fenced"]
            res.users_written = out["written"]
        res.write_seconds = time.perf_counter() - tw
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

        # Fenced partitions are committed too: every event at or before the stored offset is in the store. From a
        # consumer that lost the partition the commit is refused below anyway.
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
