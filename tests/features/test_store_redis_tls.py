"""Redis over TLS (real redis-server with --tls-port, the plain port closed; certificates made by the test): the
online store reads, writes and does its fenced write over TLS from either spelling of the option; a plain client,
a server certificate from another CA and one for another host name are all refused with an error that names
Redis and never shows the password; the configuration errors say what is wrong."""
from __future__ import annotations

import traceback
import uuid

import pytest

from devservices.redis import RedisServer
from tests.features.tls_support import make_ca, make_server_pem, write_ca

pytestmark = pytest.mark.services

PASSWORD = "tls-Pa55-4c7be210"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("redis-tls")
    ca, other_ca = make_ca(), make_ca("another CA")
    return {"server": make_server_pem(ca, d / "server.pem"), "ca": write_ca(ca, d / "ca.pem"),
            "other_ca": write_ca(other_ca, d / "other-ca.pem"),
            "wrong_host": make_server_pem(ca, d / "wrong-host.pem", hosts=("redis.example.invalid",))}


@pytest.fixture(scope="module")
def tls_redis(certs, tmp_path_factory):
    pem = certs["server"]
    with RedisServer(tmp_path_factory.mktemp("redis-tls-data"), password=PASSWORD, tls=(pem, pem, certs["ca"])) as r:
        yield r


def config(tmp_path, url, **kw):
    from features.store import StoreConfig

    return StoreConfig(type="redis", redis_url=url, registry_path=str(tmp_path / f"reg-{uuid.uuid4().hex[:6]}.db"),
                       project=f"t{uuid.uuid4().hex[:10]}", redis_socket_timeout_s=2, redis_retries=0, **kw).validate()


def user(uid="u1"):
    from features.store import UserState

    return UserState(user_id=uid, codes=[[1, 2], [3, 4]], recent_items=["i1", "i2"], recent_times_ms=[1, 2],
                     last_event_time_ms=2, n_applied=2)


def test_store_works_over_tls(tls_redis, certs, tmp_path):
    from features.store import StoreConfig, open_store

    from_env = StoreConfig.from_env({"HYMIREC_STORE_TYPE": "redis", "HYMIREC_REDIS_URL":
                                     f"{tls_redis.url},password={PASSWORD}", "HYMIREC_REDIS_TLS": "true",
                                     "HYMIREC_REDIS_CA_FILE": str(certs["ca"]),
                                     "HYMIREC_FEAST_REGISTRY": str(tmp_path / "env-reg.db")})
    for cfg in (from_env.with_(project=f"t{uuid.uuid4().hex[:10]}"),
                config(tmp_path, f"rediss://{tls_redis.url},password={PASSWORD}", redis_ca_file=str(certs["ca"])),
                config(tmp_path, f"localhost:{tls_redis.port},password={PASSWORD}", redis_tls=True,
                       redis_ca_file=str(certs["ca"])),  # the host name checked against the certificate's SANs
                # the chart's spelling (externalRedis.ssl + caSecret), which Feast tooling reads as well
                config(tmp_path, f"localhost:{tls_redis.port},ssl=true,ssl_cert_reqs=required,ssl_check_hostname=true,"
                                 f"ssl_ca_certs={certs['ca']},password={PASSWORD}")):
        assert cfg.tls and PASSWORD not in repr(cfg)
        store = open_store(cfg)
        try:
            store.ping()
            store.write_users([user()])
            assert store.read_users(["u1"])["u1"].recent_items == ["i1", "i2"]
            assert store.write_users_fenced("events", {0: (10, [user("u2")])}) == set()
            assert store.write_users_fenced("events", {0: (5, [user("u3")])}) == {0}  # an older offset: refused
            assert store.read_fence("events") == {0: 10}
            assert "(TLS)" in store.where
        finally:
            store.close()


def _failure(cfg) -> str:
    from features.store import StoreError, open_store

    store = open_store(cfg, apply=False)
    try:
        with pytest.raises(StoreError) as info:
            store.read_users(["u1"])
    finally:
        store.close()
    text = "".join(traceback.format_exception(info.value))
    assert PASSWORD not in text, text
    return str(info.value)


def test_without_tls_or_with_an_untrusted_certificate_nothing_is_read(tls_redis, certs, tmp_path):
    plain = _failure(config(tmp_path, f"{tls_redis.url},password={PASSWORD}"))
    assert tls_redis.url in plain and "password=***" in plain
    other_ca = _failure(config(tmp_path, f"{tls_redis.url},password={PASSWORD}", redis_tls=True,
                               redis_ca_file=str(certs["other_ca"])))
    assert "(TLS)" in other_ca and "certificate verify failed" in other_ca, other_ca
    assert PASSWORD not in tls_redis.log_path.read_text()


def test_a_certificate_for_another_host_is_refused(certs, tmp_path):
    pem = certs["wrong_host"]
    with RedisServer(tmp_path / "wrong-host", password=PASSWORD, tls=(pem, pem, certs["ca"])) as server:
        msg = _failure(config(tmp_path, f"{server.url},password={PASSWORD}", redis_tls=True,
                              redis_ca_file=str(certs["ca"])))
    assert "certificate verify failed" in msg and ("IP address mismatch" in msg or "hostname" in msg.lower()), msg


def test_tls_configuration_errors_say_what_is_wrong(certs, tmp_path):
    from features.store import StoreConfig
    from features.store.config import StoreConfigError

    cases = [({"redis_ca_file": str(certs["ca"])}, "TLS is off"),
             ({"redis_tls": "true", "redis_ca_file": str(tmp_path / "missing.pem")}, "does not exist"),
             ({"redis_tls": "maybe"}, "redis_tls must be true or false"),
             ({"redis_url": f"rediss://app:{PASSWORD}@h:6380"}, "rediss://host:port,password=")]
    for extra, said in cases:
        with pytest.raises(StoreConfigError, match=said) as info:
            StoreConfig.from_mapping({"type": "redis", **extra})
        assert PASSWORD not in str(info.value)
    assert not StoreConfig.from_mapping({"type": "redis", "redis_tls": "false"}).tls
