"""Prometheus metrics of the stream processor (one CollectorRegistry per processor, so tests can run several).

    hymirec_stream_events_in_total                    messages polled from the topic
    hymirec_stream_events_applied_total               events appended to a user's history
    hymirec_stream_events_skipped_total{reason}       already_applied (replay / restart) | duplicate | fenced (the
                                                      store holds a later offset: another consumer owns the partition)
    hymirec_stream_events_dlq_total{reason}           messages sent to the DLQ, by reason (core.schemas.DLQ_REASONS)
    hymirec_stream_items_encoded_total                unknown items encoded on the fly from their embedding
    hymirec_stream_batches_total                      batches written and committed
    hymirec_stream_batch_write_seconds                histogram: store read-modify-write time per batch
    hymirec_stream_batch_seconds                      histogram: whole batch (validate → write → DLQ flush → commit)
    hymirec_stream_record_to_store_seconds            histogram: Kafka record timestamp → user row written
    hymirec_stream_consumer_lag{partition}            high watermark − position, per assigned partition
    hymirec_stream_commit_failures_total              offset commits refused (rebalance): records are re-read, then skipped
    hymirec_stream_store_retries_total                failed store calls retried (Redis down or restarting)
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _prom_values

from core.schemas import DLQ_REASONS

SKIP_REASONS = ("already_applied", "duplicate", "fenced")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


_SWAP_LOCK = threading.Lock()


@contextmanager
def _in_process_values():
    """Create metric values in this process's memory.

    Importing Feast 0.67 sets PROMETHEUS_MULTIPROCESS_DIR (for its gunicorn feature server), which switches
    prometheus_client to mmap-file values keyed only by metric name and labels: two processors in one process
    would then share counters. Our metrics live in their own registry and must stay per-object."""
    with _SWAP_LOCK:
        saved = _prom_values.ValueClass
        _prom_values.ValueClass = _prom_values.MutexValue
        try:
            yield
        finally:
            _prom_values.ValueClass = saved


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "hymirec_stream"):
        with _in_process_values():
            self._init(registry, prefix)

    def set_lag(self, partition: int, lag: int) -> None:
        with _in_process_values():
            self.lag.labels(partition=str(partition)).set(lag)

    def _init(self, registry: CollectorRegistry | None, prefix: str) -> None:
        self.registry = registry or CollectorRegistry()
        r, p = self.registry, prefix
        self.events_in = Counter(f"{p}_events_in", "messages polled from the topic", registry=r)
        self.applied = Counter(f"{p}_events_applied", "events appended to a user's history", registry=r)
        self.skipped = Counter(f"{p}_events_skipped", "events skipped", ["reason"], registry=r)
        self.dlq = Counter(f"{p}_events_dlq", "messages sent to the DLQ", ["reason"], registry=r)
        self.encoded = Counter(f"{p}_items_encoded", "unknown items encoded on the fly", registry=r)
        self.batches = Counter(f"{p}_batches", "batches written and committed", registry=r)
        self.release_switches = Counter(f"{p}_release_switches", "switches to a newly current release",
                                        registry=r)
        self.commit_failures = Counter(f"{p}_commit_failures", "offset commits refused", registry=r)
        self.store_retries = Counter(f"{p}_store_retries", "failed store calls retried", registry=r)
        self.write_seconds = Histogram(f"{p}_batch_write_seconds", "store read-modify-write per batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram(f"{p}_batch_seconds", "whole batch", buckets=_LATENCY_BUCKETS, registry=r)
        self.record_to_store = Histogram(f"{p}_record_to_store_seconds",
                                         "Kafka record timestamp to user row written",
                                         buckets=_LATENCY_BUCKETS + (30.0, 60.0), registry=r)
        self.lag = Gauge(f"{p}_consumer_lag", "high watermark minus position", ["partition"], registry=r)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason=reason)
        for reason in DLQ_REASONS:
            self.dlq.labels(reason=reason)

    def _value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels or None)
        return float(v or 0.0)

    def snapshot(self) -> dict:
        """Plain numbers (for logs, tests and the CLI summary)."""
        p = "hymirec_stream"
        lag = {}
        for metric in self.lag.collect():
            for s in metric.samples:
                lag[int(s.labels["partition"])] = int(s.value)
        return {
            "events_in": int(self._value(f"{p}_events_in_total")),
            "applied": int(self._value(f"{p}_events_applied_total")),
            "skipped": {r: int(self._value(f"{p}_events_skipped_total", reason=r)) for r in SKIP_REASONS},
            "dlq": {r: int(self._value(f"{p}_events_dlq_total", reason=r)) for r in DLQ_REASONS},
            "encoded": int(self._value(f"{p}_items_encoded_total")),
            "batches": int(self._value(f"{p}_batches_total")),
            "release_switches": int(self._value(f"{p}_release_switches_total")),
            "commit_failures": int(self._value(f"{p}_commit_failures_total")),
            "store_retries": int(self._value(f"{p}_store_retries_total")),
            "lag": lag,
        }

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Expose /metrics on addr:port (a daemon thread). Returns the server."""
        from prometheus_client import start_http_server
        return start_http_server(port, addr=addr, registry=self.registry)
