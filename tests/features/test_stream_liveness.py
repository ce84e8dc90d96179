"""The stream processor's liveness endpoint against the real broker: /live stays 200 while the consumer is caught up
and idle (however long), turns 503 once the consume loop has made no progress for liveness_stall_s while there is
work (a batch in flight, lag > 0), while /metrics keeps answering 200 (why the probe must not ask /metrics), and
turns 200 again when the loop moves on. The loop is wedged through the processor's before_write seam."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from devservices._proc import free_port
from stream_support import assert_store_equals_golden, golden_state, new_topic, produce, random_events

pytestmark = [pytest.mark.services, pytest.mark.slow]

STALL_S = 2.0


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = check()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_live_fails_when_the_loop_stalls_with_lag(kafka_broker, store_factory, item_table):
    from features.item_codes import ItemCodeMapper
    from features.stream import StreamConfig, StreamProcessor
    topic = new_topic(kafka_broker, "live")
    group = f"{topic}-g"
    events, _ = random_events(3_000, 150, seed=51)
    sent = produce(kafka_broker, topic, events[:1_500])
    port = free_port()
    store = store_factory("sqlite")
    cfg = StreamConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group_id=group, metrics_port=port,
                       liveness_stall_s=STALL_S, max_poll_records=200, max_runtime_s=120)
    proc = StreamProcessor(cfg, store, ItemCodeMapper(*item_table))
    stall, stalled, release = threading.Event(), threading.Event(), threading.Event()

    def wedge() -> None:  # the loop blocks here, mid-batch, rows read but not written
        if stall.is_set():
            stalled.set()
            release.wait(60)

    proc.before_write = wedge
    runner = threading.Thread(target=proc.run, name=f"proc-{uuid.uuid4().hex[:4]}", daemon=True)
    runner.start()
    try:
        _wait(lambda: kafka_broker.committed(group, topic) == kafka_broker.end_offsets(topic), 60, "catch-up")
        time.sleep(STALL_S * 1.5)  # caught up and idle for longer than the stall limit: still alive
        status, body = _get(port, "/live")
        assert status == 200, body
        assert json.loads(body)["lag"] == 0
        assert _get(port, "/ready")[0] == 200
        assert b"hymirec_stream_events_in_total" in _get(port, "/metrics")[1]

        stall.set()
        sent += produce(kafka_broker, topic, events[1_500:])
        assert stalled.wait(30), "the processor never reached the wedge"
        t_stall = time.monotonic()
        status, body = _wait(lambda: (lambda r: r if r[0] == 503 else None)(_get(port, "/live")), 15,
                             "/live to report the stall")
        assert time.monotonic() - t_stall >= STALL_S - 0.5  # not before the configured time
        detail = json.loads(body)
        assert detail["live"] is False and "no progress" in detail["reason"], detail
        assert detail["batch_in_flight_s"] >= STALL_S - 0.5
        assert _get(port, "/metrics")[0] == 200  # the old probe's URL: answers while the loop is wedged

        stall.clear()
        release.set()
        _wait(lambda: _get(port, "/live")[0] == 200, 15, "/live to recover")
        _wait(lambda: kafka_broker.committed(group, topic) == kafka_broker.end_offsets(topic), 60, "catch-up 2")
    finally:
        release.set()
        proc.request_stop()
        runner.join(30)
    assert not runner.is_alive()
    ids, codes = item_table
    assert_store_equals_golden(store, golden_state(sent, dict(zip(ids, codes))))


def test_liveness_rule_needs_work_to_fail():
    """The rule alone: no work (lag 0, no batch) never fails; the stall clock starts when work appears; lag or a
    batch in flight without progress for stall_s fails; progress clears it."""
    from features.stream_health import Liveness
    live = Liveness(stall_s=0.3)
    live.idle(0)
    time.sleep(0.4)
    assert live.status()[0]  # caught up and quiet for longer than stall_s
    live.idle(7)  # events arrived: the clock starts now, not at the last progress
    assert live.status()[0]
    time.sleep(0.4)
    ok, detail = live.status()
    assert not ok and detail["lag"] == 7 and "lag 7" in detail["reason"]
    live.batch_started()
    live.batch_done()
    assert live.status()[0]
    live.set_lag(0)
    live.batch_started()
    time.sleep(0.4)
    ok, detail = live.status()
    assert not ok and "a batch in flight" in detail["reason"]
    with pytest.raises(ValueError, match="stall time"):
        Liveness(stall_s=0)
