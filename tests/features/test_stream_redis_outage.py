"""Redis outages mid-stream, against the real broker and a real redis-server (append-only file, fsync always, so a
restart keeps what was acknowledged): while events flow, redis-server is stopped and started again three times
(twice SIGTERM, once kill -9). The processor retries with backoff and a log line per attempt, commits nothing it
did not write, and after catch-up the store equals the golden state: nothing lost, nothing applied twice. An
outage longer than store_retry_s ends the processor with a StoreError and nothing committed."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from bench.reliability import report_figures
from devservices.redis import RedisServer
from stream_support import assert_store_equals_golden, golden_state, lost_and_doubled, new_topic, produce, random_events

pytestmark = [pytest.mark.services, pytest.mark.slow]

OUTAGES = (("SIGTERM", 2.0), ("SIGKILL", 2.0), ("SIGTERM", 3.0))


def _lag(broker, group, topic) -> int:
    return sum(broker.end_offsets(topic).values()) - sum(broker.committed(group, topic).values())


def _store(tmp_path, redis):
    from features.store import StoreConfig, open_store
    return open_store(StoreConfig(type="redis", redis_url=redis.url, registry_path=str(tmp_path / "registry.db")))


def _processor(broker, topic, group, store, item_table, **kw):
    from features.item_codes import ItemCodeMapper
    from features.stream import StreamConfig, StreamProcessor
    cfg = StreamConfig(bootstrap=broker.bootstrap, topic=topic, group_id=group, max_poll_records=200, **kw)
    return StreamProcessor(cfg, store, ItemCodeMapper(*item_table))


def test_redis_restarts_mid_stream_lose_and_double_nothing(kafka_broker, tmp_path, item_table, caplog):
    topic = new_topic(kafka_broker, "outage")
    group = f"{topic}-g"
    events, users = random_events(14_000, 500, seed=61, duplicates=0.01)
    t0 = time.monotonic()
    with RedisServer(tmp_path / "redis", persist=True) as redis:
        store = _store(tmp_path, redis)
        sent = produce(kafka_broker, topic, events[:2_000])
        proc = _processor(kafka_broker, topic, group, store, item_table, idle_exit_s=3.0, store_retry_s=60,
                          max_runtime_s=240)
        runner = threading.Thread(target=proc.run, daemon=True)
        more: list = []
        outages_done = threading.Event()

        def publish() -> None:
            # A steady trickle until the last outage is over, so each one lands while work keeps arriving (a fast
            # machine drains any backlog between batches, so the lag alone may be 0 at the moment redis goes down);
            # then the rest at once.
            start = 2_000
            while start < len(events):
                step = len(events) if outages_done.is_set() else 100
                more.extend(produce(kafka_broker, topic, events[start:start + step]))
                start += step
                if not outages_done.is_set():
                    time.sleep(0.25)

        feeder = threading.Thread(target=publish, daemon=True)
        with caplog.at_level(logging.WARNING, logger="hymirec.stream"):
            runner.start()
            feeder.start()
            survived = 0
            for how, down_s in OUTAGES:
                before = sum(kafka_broker.committed(group, topic).values())
                deadline = time.monotonic() + 60
                while sum(kafka_broker.committed(group, topic).values()) <= before + 300:  # recovered, progressing
                    assert time.monotonic() < deadline and runner.is_alive(), "no progress between outages"
                    time.sleep(0.1)
                assert feeder.is_alive(), "outage would land on no work: the feeder ran out of events"
                redis.restart(down_s=down_s, kill=how == "SIGKILL")
                survived += 1
            outages_done.set()
            feeder.join(120)
            runner.join(180)
        assert not runner.is_alive(), "the processor did not catch up and exit"
        sent += more
        assert _lag(kafka_broker, group, topic) == 0 and len(sent) == len(events)
        snap = proc.metrics.snapshot()
        assert snap["store_retries"] >= len(OUTAGES), snap  # every outage was met by retries, none was skipped
        ids, codes = item_table
        golden = golden_state(sent, dict(zip(ids, codes)))
        lost, doubled = lost_and_doubled(store, golden)
        report_figures("redis_outages", outages=survived, signals=[how for how, _ in OUTAGES], events=len(sent),
                       lost=lost, doubled=doubled, store_retries=snap["store_retries"],
                       seconds=time.monotonic() - t0)
        assert_store_equals_golden(store, golden)  # 0 lost, 0 doubled
        store.close()
    retries = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    recovered = [r.getMessage() for r in caplog.records if "succeeded after" in r.getMessage()]
    assert retries and len(recovered) >= len(OUTAGES), (len(retries), len(recovered))
    assert "offsets not committed" in retries[0] and "redis at 127.0.0.1:" in retries[0]
    print(f"redis outages survived: {survived}, store retries: {snap['store_retries']}, events: {len(sent)}")


def test_outage_longer_than_the_retry_window_stops_without_commit(kafka_broker, tmp_path, item_table, caplog):
    from features.store import StoreError
    topic = new_topic(kafka_broker, "outage-long")
    group = f"{topic}-g"
    events, _ = random_events(1_000, 50, seed=62)
    with RedisServer(tmp_path / "redis") as redis:
        store = _store(tmp_path, redis)
        produce(kafka_broker, topic, events)
        redis.proc.kill()  # down before the first batch, for good
        redis.proc.wait(5)
        proc = _processor(kafka_broker, topic, group, store, item_table, store_retry_s=2.0, max_runtime_s=60)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="hymirec.stream"), pytest.raises(StoreError):
            proc.run()
        assert time.monotonic() - t0 < 30
        store.close()
    assert kafka_broker.committed(group, topic) == {}  # nothing committed: the events wait for the next run
    assert any("giving up (exit 1)" in r.getMessage() for r in caplog.records)
