"""Health of the stream processor: the liveness rule and the HTTP endpoints the chart's probes fetch.

    GET /metrics   Prometheus exposition (features.stream_metrics)
    GET /live      200 while the consume loop makes progress; 503 when it has made none for ``stall_s`` seconds
                   while there is work to do (consumer lag > 0, or a batch in flight)
    GET /ready     200 once the consume loop has polled (the consumer is in its group; it may own no partition)

Progress means: a batch was written and committed, or the loop found nothing to do (lag 0 on every assigned
partition, or no partition assigned). The rule needs the consume loop itself to report, because the HTTP server
runs on its own thread and keeps answering while the loop is wedged (a hung store call, a stuck poll, a deadlock):
answering /metrics proves only that this thread is alive, which is why the liveness probe asks /live.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_STALL_S = 120.0


class Liveness:
    """What the consume loop reports (plain attribute writes: the HTTP thread only reads them)."""

    def __init__(self, stall_s: float = DEFAULT_STALL_S):
        if stall_s <= 0:
            raise ValueError(f"liveness stall time must be > 0 s, got {stall_s}")
        self.stall_s = float(stall_s)
        self.last_progress = time.monotonic()
        self.lag = 0                     # total lag of the assigned partitions at the last loop iteration
        self.batch_since: float | None = None
        self.polling = False

    # ---- called by the consume loop -------------------------------------------------------------------------
    def _work_appears(self, lag: int) -> None:
        # the stall clock starts when there is work, not at the last progress before a quiet spell
        if lag > 0 and self.lag <= 0 and self.batch_since is None:
            self.last_progress = time.monotonic()

    def batch_started(self) -> None:
        self._work_appears(1)
        self.batch_since = time.monotonic()

    def batch_done(self) -> None:
        self.batch_since = None
        self.last_progress = time.monotonic()

    def idle(self, lag: int) -> None:
        """An empty poll: with no lag there is nothing to do, which counts as progress."""
        self._work_appears(lag)
        self.lag, self.polling = int(lag), True
        if self.lag <= 0:
            self.last_progress = time.monotonic()

    def set_lag(self, lag: int) -> None:
        self._work_appears(lag)
        self.lag, self.polling = int(lag), True

    # ---- read by the probe ----------------------------------------------------------------------------------
    def status(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        stalled_for = now - self.last_progress
        work = self.lag > 0 or self.batch_since is not None
        ok = not (work and stalled_for > self.stall_s)
        detail = {"live": ok, "seconds_since_progress": round(stalled_for, 1), "stall_s": self.stall_s,
                  "lag": self.lag,
                  "batch_in_flight_s": None if self.batch_since is None else round(now - self.batch_since, 1)}
        if not ok:
            detail["reason"] = (f"no progress for {stalled_for:.0f} s (limit {self.stall_s:g} s) with "
                                + (f"lag {self.lag}" if self.lag > 0 else "a batch in flight"))
        return ok, detail


def serve(port: int, metrics: Any, liveness: Liveness, addr: str = "127.0.0.1") -> ThreadingHTTPServer:
    """/metrics, /live, /ready on addr:port from a daemon thread. Returns the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/live":
                ok, detail = liveness.status()
                self._send(200 if ok else 503, json.dumps(detail).encode(), "application/json")
            elif path == "/ready":
                ok = liveness.polling
                self._send(200 if ok else 503, json.dumps({"ready": ok}).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # probes every few seconds would flood the log
            pass

    server = ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stream-health", daemon=True).start()
    return server
