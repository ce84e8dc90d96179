"""Crash-restart and shutdown of the processor as a real process: kill -9 at >= 20 random points during a
>= 20k-event stream, restart each time → store equals the golden state (0 lost, 0 double-applied); SIGTERM
finishes the batch and commits; bad configuration exits non-zero with a clear message and writes nothing.

Processor processes are forked from a forkserver that has Feast and kafka-python imported already (importing
Feast takes ~5 s; a fresh interpreter per restart would spend most of the test importing)."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from features.stream_cli import run_cli
from stream_support import (ROOT_DIR, assert_store_equals_golden, golden_state, new_topic, produce,
                            random_events)

pytestmark = [pytest.mark.services, pytest.mark.slow]

CTX = multiprocessing.get_context("forkserver")


@pytest.fixture(scope="module")
def forkserver():
    CTX.set_forkserver_preload(["feast", "feast.feature_store", "kafka", "features.stream", "features.stream_cli",
                                "features.store.feast_sqlite", "features.store.feast_redis"])
    yield CTX


def _argv(broker, topic, group, codes_file, db, *extra):
    # a 20 s rebalance timeout (max poll interval): a rebalance that waits on a killed member gives up in 20 s,
    # not the default 300 s
    return ["run", "--bootstrap", broker.bootstrap, "--topic", topic, "--group", group,
            "--item-codes", str(codes_file), "--store", "sqlite", "--sqlite-path", str(db),
            "--session-timeout-ms", "6000", "--heartbeat-ms", "1000", "--max-poll-interval-ms", "20000", *extra]


def _committed_total(broker, group, topic) -> int:
    return sum(broker.committed(group, topic).values())


def _group_story(broker, group) -> str:
    """What the broker says about the group: its state and members, and its coordinator log lines."""
    admin = broker.admin()
    try:
        desc = admin.describe_groups([group])
    except Exception as exc:  # diagnostics only: the failure being reported matters more
        desc = f"describe failed: {exc!r}"
    finally:
        admin.close()
    lines = [ln for ln in broker.log_path.read_text(errors="replace").splitlines() if group in ln]
    return f"group: {desc}\nbroker log ({len(lines)} lines about the group, last 25):\n" + "\n".join(lines[-25:])


def _wait_progress(broker, group, topic, before: int, proc, timeout: float = 150.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _committed_total(broker, group, topic)
        if now > before:
            return now
        assert proc.is_alive(), f"processor exited early with code {proc.exitcode}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGUSR1)  # the processor prints its threads' stacks (captured stderr below)
    time.sleep(1.0)
    raise AssertionError(f"processor made no progress in {timeout:.0f} s (committed {before})\n"
                         + _group_story(broker, group))


def test_kill_9_at_random_points(kafka_broker, forkserver, tmp_path, item_codes_file, item_table):
    rng = random.Random(31)
    topic = new_topic(kafka_broker, "crash")
    group = f"{topic}-g"
    db = tmp_path / "online.db"
    # A pool larger than the stream needs: before each life the test tops the backlog (sent, not yet
    # committed) up to `backlog` events, so every kill lands mid-stream however fast this machine processes.
    events, users = random_events(80_000, 800, seed=31, duplicates=0.01)
    backlog = 3_000
    argv = _argv(kafka_broker, topic, group, item_codes_file, db, "--group-instance-id", "crash-test",
                 "--max-poll-records", "100")
    sent, kills, kills_mid_stream = [], 0, 0
    for _ in range(22):  # 22 lives, each ended by kill -9
        before = _committed_total(kafka_broker, group, topic)
        sent += produce(kafka_broker, topic, events[len(sent):before + backlog])  # one Sent per event
        proc = forkserver.Process(target=run_cli, args=(argv,), daemon=True)
        proc.start()
        try:
            _wait_progress(kafka_broker, group, topic, before, proc)
            time.sleep(rng.uniform(0.0, 0.15))
            lag = sum(kafka_broker.end_offsets(topic).values()) - _committed_total(kafka_broker, group, topic)
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        assert proc.exitcode == -signal.SIGKILL
        kills += 1
        kills_mid_stream += lag > 0
    if len(sent) < 20_000:
        sent += produce(kafka_broker, topic, events[len(sent):20_000])
    assert kills >= 20 and kills_mid_stream >= 15, (kills, kills_mid_stream)
    # restart once more and let it catch up
    final = forkserver.Process(target=run_cli, args=(argv + ["--idle-exit", "1.0", "--max-runtime", "120"],))
    final.start()
    final.join(150)
    assert final.exitcode == 0
    assert sum(kafka_broker.committed(group, topic).values()) == len(sent) >= 20_000

    from features.store import StoreConfig, open_store
    ids, codes = item_table
    golden = golden_state(sent, dict(zip(ids, codes)))
    store = open_store(StoreConfig(type="sqlite", sqlite_path=str(db)))
    try:
        assert_store_equals_golden(store, golden)  # 0 lost, 0 double-applied
    finally:
        store.close()


def test_sigterm_finishes_batch_and_commits(kafka_broker, forkserver, tmp_path, item_codes_file, item_table):
    topic = new_topic(kafka_broker, "term")
    group = f"{topic}-g"
    db = tmp_path / "online.db"
    events, users = random_events(8_000, 300, seed=41)
    sent = produce(kafka_broker, topic, events)
    proc = forkserver.Process(target=run_cli, args=(_argv(kafka_broker, topic, group, item_codes_file, db,
                                                          "--max-poll-records", "50"),))
    proc.start()
    _wait_progress(kafka_broker, group, topic, 0, proc)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    assert proc.exitcode == 0
    committed = kafka_broker.committed(group, topic)
    from features.store import StoreConfig, open_store
    store = open_store(StoreConfig(type="sqlite", sqlite_path=str(db)))
    try:
        states = store.read_users(users)
    finally:
        store.close()
    applied: dict[int, int] = {}
    for st in states.values():
        for p, off in st.applied.items():
            applied[p] = max(applied.get(p, -1), off)
    # the last batch was written AND committed: store and committed offsets agree exactly
    assert {p: off + 1 for p, off in applied.items()} == {p: c for p, c in committed.items() if c > 0}
    assert sum(committed.values()) < len(sent)  # it really stopped mid-stream


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "features.stream_cli", *args], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HYMIREC_LOG": "WARNING"})


def test_no_broker_reachable(tmp_path, item_codes_file):
    from devservices._proc import free_port
    db = tmp_path / "online.db"
    t0 = time.monotonic()
    r = _cli("run", "--bootstrap", f"127.0.0.1:{free_port()}", "--item-codes", str(item_codes_file),
             "--sqlite-path", str(db))
    assert r.returncode == 2, r.stderr
    assert "no Kafka broker reachable" in r.stderr
    assert not db.exists() and not any(tmp_path.iterdir())
    assert time.monotonic() - t0 < 30


def test_unknown_store_type(kafka_broker, tmp_path, item_codes_file):
    topic = f"never-{os.getpid()}-{int(time.time())}"
    r = _cli("run", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--item-codes", str(item_codes_file),
             "--store", "cassandra", "--sqlite-path", str(tmp_path / "online.db"))
    assert r.returncode == 2, r.stderr
    assert "unknown store type 'cassandra'" in r.stderr
    assert not any(tmp_path.iterdir())
    admin = kafka_broker.admin()
    try:
        assert topic not in admin.list_topics()  # nothing created on the broker either
    finally:
        admin.close()


def test_unreadable_item_codes(kafka_broker, tmp_path):
    r = _cli("run", "--bootstrap", kafka_broker.bootstrap, "--item-codes", str(tmp_path / "missing.npz"),
             "--sqlite-path", str(tmp_path / "online.db"))
    assert r.returncode == 2 and "cannot read item codes" in r.stderr
    assert not (tmp_path / "online.db").exists()
