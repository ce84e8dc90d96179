"""Kafka over TLS with SASL/SCRAM, against a real broker started with a SASL_SSL listener (certificates made here
with `cryptography`, SCRAM user added through the admin API): create-topics, the producer and the processor (CLI,
password from the environment) work end to end; a wrong password, a wrong CA and a plaintext client are refused
with clear errors that never show the password."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from devservices.kafka import KafkaBroker
from stream_support import ROOT_DIR, assert_store_equals_golden, golden_state, produce, random_events
from tls_support import make_ca, make_server_pem, write_ca

pytestmark = [pytest.mark.services, pytest.mark.slow]

USER = "hymirec-stream"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    d = tmp_path_factory.mktemp("kafka-tls")
    ca = make_ca()
    pem = make_server_pem(ca, d / "broker.pem")
    password = secrets.token_urlsafe(18)
    with KafkaBroker(d / "broker", partitions=2, tls_pem=pem) as broker:
        broker.add_scram_user(USER, password)
        yield {"broker": broker, "ca": write_ca(ca, d / "ca.pem"), "password": password,
               "other_ca": write_ca(make_ca("some other CA"), d / "other-ca.pem")}


def _security(s, **over):
    from features.kafka_security import KafkaSecurity
    kw = dict(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username=USER, password=s["password"],
              ssl_cafile=str(s["ca"]))
    return KafkaSecurity(**{**kw, **over}).validate()


def _cli(s, *args, password=None, timeout=120):
    env = {**os.environ, "HYMIREC_LOG": "WARNING", "HYMIREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "HYMIREC_KAFKA_USERNAME": USER, "HYMIREC_KAFKA_PASSWORD": password or s["password"]}
    return subprocess.run([sys.executable, "-m", "features.stream_cli", *args], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _created(s, topic: str, **over) -> None:
    from features.producer import create_topics
    deadline = time.monotonic() + 20
    while True:  # the SCRAM credential reaches the broker's cache a moment after the admin call
        try:
            create_topics(s["broker"].secure_bootstrap, topic, partitions=2, security=_security(s, **over))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_create_topics_produce_and_process_over_sasl_ssl(secure, tmp_path, item_codes_file, item_table):
    from features.producer import make_producer
    broker, boot = secure["broker"], secure["broker"].secure_bootstrap
    topic = f"secure-{secrets.token_hex(4)}"
    _created(secure, topic)
    events, _ = random_events(3_000, 120, seed=91)
    producer = make_producer(boot, _security(secure))
    try:
        sent = produce(broker, topic, events, producer=producer)
    finally:
        producer.close(timeout=5)
    db = tmp_path / "online.db"
    r = _cli(secure, "run", "--bootstrap", boot, "--topic", topic, "--group", f"{topic}-g", "--item-codes",
             str(item_codes_file), "--sqlite-path", str(db), "--ssl-cafile", str(secure["ca"]),
             "--sasl-mechanism", "SCRAM-SHA-512", "--idle-exit", "1.0", "--max-runtime", "90")
    assert r.returncode == 0, r.stderr[-3000:]
    assert secure["password"] not in r.stdout + r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["events_in"] == len(sent)
    assert broker.committed(f"{topic}-g", topic) == broker.end_offsets(topic)

    from features.store import StoreConfig, open_store
    store = open_store(StoreConfig(type="sqlite", sqlite_path=str(db)))
    try:
        ids, codes = item_table
        assert_store_equals_golden(store, golden_state(sent, dict(zip(ids, codes))))
    finally:
        store.close()


def test_cli_create_topics_over_sasl_ssl(secure):
    topic = f"secure-cli-{secrets.token_hex(4)}"
    r = _cli(secure, "create-topics", "--bootstrap", secure["broker"].secure_bootstrap, "--topic", topic,
             "--partitions", "3", "--ssl-cafile", str(secure["ca"]))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["created"] == [topic, f"{topic}.dlq"]
    assert len(secure["broker"].end_offsets(topic)) == 3


@pytest.mark.parametrize("case", ["wrong_password", "wrong_ca"])
def test_refused_links_are_clear_errors_without_the_password(case, secure, tmp_path, item_codes_file):
    topic = f"secure-bad-{secrets.token_hex(4)}"
    _created(secure, topic)
    wrong = secrets.token_urlsafe(12)
    ca = secure["other_ca"] if case == "wrong_ca" else secure["ca"]
    r = _cli(secure, "run", "--bootstrap", secure["broker"].secure_bootstrap, "--topic", topic, "--item-codes",
             str(item_codes_file), "--sqlite-path", str(tmp_path / "online.db"), "--ssl-cafile", str(ca),
             "--max-runtime", "30", password=wrong if case == "wrong_password" else None)
    assert r.returncode == 2, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "cannot connect to Kafka" in r.stderr and f"SASL_SSL (SCRAM-SHA-512 as user '{USER}')" in r.stderr
    if case == "wrong_ca":  # the handshake's reason, which kafka-python only logs, is in the message (a refused
        # login often reaches kafka-python as a bare disconnect, so "invalid credentials" is not always there)
        assert "CERTIFICATE_VERIFY_FAILED" in r.stderr.splitlines()[-1]
    assert wrong not in out and secure["password"] not in out


def test_plaintext_client_on_the_secure_listener_is_refused(secure):
    from features.item_codes import StreamConfigError
    from features.kafka_security import KafkaSecurity
    from features.producer import make_producer
    with pytest.raises(StreamConfigError, match="cannot connect to Kafka"):
        make_producer(secure["broker"].secure_bootstrap, KafkaSecurity(), bootstrap_timeout_ms=4000).close()


def test_security_settings_are_checked_and_never_show_the_password(tmp_path):
    from features.item_codes import StreamConfigError
    from features.kafka_security import KafkaSecurity
    with pytest.raises(StreamConfigError, match="HYMIREC_KAFKA_PASSWORD"):
        KafkaSecurity.from_env({"HYMIREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HYMIREC_KAFKA_USERNAME": "u"})
    with pytest.raises(StreamConfigError, match="one of PLAINTEXT"):
        KafkaSecurity.from_env({"HYMIREC_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(StreamConfigError, match="does not exist"):
        KafkaSecurity(protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem")).validate()
    sec = KafkaSecurity.from_env({"HYMIREC_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "HYMIREC_KAFKA_USERNAME": "u",
                                  "HYMIREC_KAFKA_PASSWORD": "pa55-w0rd"})
    assert sec.sasl_mechanism == "SCRAM-SHA-512" and "pa55-w0rd" not in repr(sec) + sec.describe()
    assert sec.client_kwargs()["sasl_plain_password"] == "pa55-w0rd"
    assert sec.scrub("auth pa55-w0rd failed") == "auth *** failed"
    from features.stream import StreamConfig
    cfg = StreamConfig(security=KafkaSecurity(protocol="SASL_SSL", username="u", password="p")).validate()
    assert cfg.security.client_kwargs()["sasl_mechanism"] == "SCRAM-SHA-512"
