"""Redis with a password (real redis-server --requirepass): the password never reaches an error, a traceback, a log
line or the CLI's output on any failure path; a hung Redis fails a call within the socket timeout."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import pytest

from devservices.redis import RedisServer
from devservices._proc import free_port

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55-7f3a9c1e"  # distinctive, so any leak is found by a plain substring search
WRONG = "wr0ng-Pa55-b81d02aa"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD) as server:
        yield server


def config(tmp_path, url, **kw):
    from features.store import StoreConfig

    return StoreConfig(type="redis", redis_url=url, registry_path=str(tmp_path / f"reg-{uuid.uuid4().hex[:6]}.db"),
                       project=f"t{uuid.uuid4().hex[:10]}", **kw)


def user(uid="u1"):
    from features.store import UserState

    return UserState(user_id=uid, codes=[[1, 2], [3, 4]], recent_items=["i1", "i2"], recent_times_ms=[1, 2],
                     last_event_time_ms=2, n_applied=2)


def shown(exc: BaseException) -> str:
    """Everything a log or a crash would print for this exception: message and the whole chained traceback."""
    return "".join(traceback.format_exception(exc))


def test_password_works_and_is_redacted_in_config(locked_redis, tmp_path):
    from features.store import open_store

    cfg = config(tmp_path, f"{locked_redis.url},db=0,password={PASSWORD}")
    store = open_store(cfg)
    try:
        store.ping()
        store.write_users([user()])
        assert store.read_users(["u1"])["u1"].recent_items == ["i1", "i2"]
    finally:
        store.close()
    assert PASSWORD not in repr(cfg) and PASSWORD not in cfg.redacted_url()
    assert cfg.redacted_url() == f"{locked_redis.url},db=0,password=***"
    from features.store.config import redact_redis_url

    assert redact_redis_url(f"redis://app:{PASSWORD}@h:6379/0") == "redis://app:***@h:6379/0"


def test_error_paths_never_show_the_password(locked_redis, tmp_path, caplog, capfd):
    from features.store import StoreError, open_store

    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []

    def expect_failure(call):
        with pytest.raises(StoreError) as info:
            call()
        failures.append(info.value)

    # Wrong password against the real server: every call of the store API that reaches Redis.
    wrong = open_store(config(tmp_path, f"{locked_redis.url},password={WRONG}"), apply=False)
    try:
        for call in (wrong.ping, lambda: wrong.read_users(["u1"]), lambda: wrong.write_users([user()]),
                     lambda: wrong.read_item_codes(["i1"]), lambda: wrong.history_nbytes("u1")):
            expect_failure(call)
    finally:
        wrong.close()
    # Nothing listening, and a port redis-py cannot use: the errors name the host, not the password.
    gone = open_store(config(tmp_path, f"127.0.0.1:{free_port()},password={PASSWORD}"), apply=False)
    try:
        expect_failure(lambda: gone.read_users(["u1"]))
    finally:
        gone.close()
    bad_port = open_store(config(tmp_path, f"127.0.0.1:notaport,password={PASSWORD}"), apply=False)
    expect_failure(lambda: bad_port.read_users(["u1"]))

    assert len(failures) == 7
    for exc in failures:
        text = shown(exc)
        assert PASSWORD not in text and WRONG not in text, text
    assert "password=***" in str(failures[0]) and "not reachable" in str(failures[0])
    out = capfd.readouterr()
    for where in (caplog.text, out.out, out.err, locked_redis.log_path.read_text()):
        assert PASSWORD not in where and WRONG not in where


def test_cli_output_never_shows_the_password(locked_redis, tmp_path):
    """`hymirec stream show` with the password from the environment (a Kubernetes Secret in the chart)."""
    env = dict(os.environ, REDIS_PASSWORD=WRONG, PYTHONPATH=str(ROOT), HYMIREC_LOG="DEBUG")
    good = tmp_path / "store.yaml"
    good.write_text(f"type: redis\nredis_url: {locked_redis.url},password=${{REDIS_PASSWORD}}\n"
                    f"registry_path: {tmp_path / 'reg.db'}\nproject: t{uuid.uuid4().hex[:10]}\n")
    broken = tmp_path / "broken.yaml"  # a YAML error quotes the line: it must be the line as written
    broken.write_text(f"type: redis\nredis_url: [{locked_redis.url},password=${{REDIS_PASSWORD}}\n")
    for cfg_file, rc, said in ((good, 1, "password=***"), (broken, 2, "not valid YAML")):
        out = subprocess.run([sys.executable, "-m", "features.stream_cli", "show", "--user", "u1",
                              "--store-config", str(cfg_file)], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == rc, out.stdout + out.stderr
        assert said in out.stderr and WRONG not in out.stdout + out.stderr, out.stderr


def test_hung_redis_fails_within_the_socket_timeout(locked_redis, tmp_path):
    from features.store import StoreError, open_store
    from features.store.feast_redis import connection_string

    cfg = config(tmp_path, f"{locked_redis.url},password={PASSWORD}", redis_socket_timeout_s=0.5,
                 redis_connect_timeout_s=0.5)
    assert connection_string(cfg).endswith(",socket_timeout=0.5,socket_connect_timeout=0.5")
    store = open_store(cfg)
    try:
        store.write_users([user("u9")])
        os.kill(locked_redis.proc.pid, signal.SIGSTOP)  # accepts nothing, answers nothing: a hung server
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreError, match="Timeout") as info:
                store.read_users(["u9"])
            # (1 retry + 1) × 0.5 s socket timeout + a short backoff; redis-py's own default policy takes ~20 s.
            assert time.monotonic() - t0 < 3.0
            assert PASSWORD not in shown(info.value)
        finally:
            os.kill(locked_redis.proc.pid, signal.SIGCONT)
        assert store.read_users(["u9"])["u9"].n_applied == 2  # the same store recovers once Redis answers
    finally:
        store.close()
