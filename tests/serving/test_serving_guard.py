"""The request guard over HTTP against the real app: API keys (both header forms, several keys, rotation without a
restart), open probes, body-size limit (413) and per-key rate limit (429 + Retry-After); start-up refusals."""
from __future__ import annotations

import time

import httpx
import pytest

from tests.serving.guard_helpers import API_KEYS, METRICS_TOKEN, start_guarded_app, write_keys_dir

pytestmark = pytest.mark.services

BODY = {"user_id": "user3", "k": 5}
PROTECTED = [("POST", "/recommend"), ("GET", "/stages"), ("GET", "/metrics"), ("GET", "/docs"),
             ("GET", "/openapi.json"), ("GET", "/no-such-path")]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(guarded_server):
    with httpx.Client(base_url=guarded_server.url, timeout=30.0) as c:
        yield c


def test_probes_stay_open(client):
    assert client.get("/live").status_code == 200
    assert client.get("/ready").status_code == 200


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_other_path_needs_a_valid_key(client, method, path):
    r = client.request(method, path, json=BODY if method == "POST" else None)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["error"]
    for headers in (bearer("not-a-key-0123456789abcdef"), {"X-API-Key": API_KEYS[0][:-1]},
                    bearer(API_KEYS[0] + "x"), {"Authorization": f"Basic {API_KEYS[0]}"}):
        r = client.request(method, path, json=BODY if method == "POST" else None, headers=headers)
        assert r.status_code == 401, (headers, r.text)


def test_all_configured_keys_and_both_header_forms_work(client):
    for headers in (bearer(API_KEYS[0]), {"X-API-Key": API_KEYS[1]}, {"authorization": f"bearer {API_KEYS[1]}"}):
        r = client.post("/recommend", json=BODY, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["items"]
    # The scraper's token comes from the same Secret (another file in the mounted directory).
    r = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert r.status_code == 200 and 'hymirec_guard_rejected_total{reason="unauthorized"}' in r.text
    assert client.get("/openapi.json", headers=bearer(API_KEYS[0])).json()["info"]["title"] == "HyMiRec recall"


def test_body_size_limit(client):
    key = bearer(API_KEYS[0])
    big = b'{"user_id": "user3", "k": 5, "pad": "' + b"x" * 5000 + b'"}'
    r = client.post("/recommend", content=big, headers={**key, "content-type": "application/json"})
    assert r.status_code == 413 and "4096 bytes" in r.json()["error"] and "max_body_bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the guard counts while reading
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/recommend", content=chunks(), headers={**key, "content-type": "application/json"})
    assert r.status_code == 413, r.text
    # Just under the limit (JSON padded with spaces) is served.
    ok = b'{"user_id": "user3", "k": 5}'.ljust(4096)
    r = client.post("/recommend", content=ok, headers={**key, "content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_rate_limit_per_key(serving_run, milvus, feast_store, tmp_path):
    server = start_guarded_app(serving_run, milvus, feast_store, write_keys_dir(tmp_path / "keys"),
                               rate_limit_rps=0.5, rate_limit_burst=3)
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            codes = [c.post("/recommend", json=BODY, headers=bearer(API_KEYS[0])).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = c.post("/recommend", json=BODY, headers=bearer(API_KEYS[0]))
            assert r.status_code == 429 and "rate limit exceeded" in r.json()["error"]
            retry = int(r.headers["retry-after"])
            assert 1 <= retry <= 2
            # Another key has its own bucket; probes are never limited.
            assert c.post("/recommend", json=BODY, headers=bearer(API_KEYS[1])).status_code == 200
            assert all(c.get("/live").status_code == 200 for _ in range(5))
            time.sleep(retry + 0.1)
            assert c.post("/recommend", json=BODY, headers=bearer(API_KEYS[0])).status_code == 200
            text = c.get("/metrics", headers=bearer(METRICS_TOKEN)).text
            assert 'hymirec_guard_rejected_total{reason="rate_limited"} 2.0' in text
    finally:
        server.stop()


def test_key_rotation_without_restart(serving_run, milvus, feast_store, tmp_path):
    keys = write_keys_dir(tmp_path / "keys")
    server = start_guarded_app(serving_run, milvus, feast_store, keys, api_keys_reload_s=0.2)
    new = "third-key-0123456789abcdef"
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            assert c.post("/recommend", json=BODY, headers=bearer(new)).status_code == 401
            write_keys_dir(keys, keys=(API_KEYS[1], new))  # first key retired, third added
            time.sleep(0.4)
            assert c.post("/recommend", json=BODY, headers=bearer(new)).status_code == 200
            assert c.post("/recommend", json=BODY, headers=bearer(API_KEYS[1])).status_code == 200
            assert c.post("/recommend", json=BODY, headers=bearer(API_KEYS[0])).status_code == 401
            # A broken rotation (a short key) keeps the current keys instead of locking everyone out.
            write_keys_dir(keys, keys=("short",))
            time.sleep(0.4)
            assert c.post("/recommend", json=BODY, headers=bearer(new)).status_code == 200
    finally:
        server.stop()


def test_start_up_refuses_unusable_key_settings(serving_run, tmp_path):
    from serving.app import create_app
    from serving.config import ServingConfig, ServingConfigError
    from serving.guard import KeyConfigError

    run = serving_run["layout"].root
    with pytest.raises(ServingConfigError, match="HYMIREC_API_KEYS_FILE.*HYMIREC_AUTH=off"):
        create_app(ServingConfig(artifact_dir=run, host="0.0.0.0"))
    with pytest.raises(ServingConfigError, match="required"):
        create_app(ServingConfig(artifact_dir=run, auth="required"))
    with pytest.raises(KeyConfigError, match="does not exist"):
        create_app(ServingConfig(artifact_dir=run, api_keys_file=str(tmp_path / "missing")))
    bad = tmp_path / "keys"
    bad.write_text(f"{API_KEYS[0]}\nabc\n")
    with pytest.raises(KeyConfigError, match=r"keys line 2 is unusable") as err:
        create_app(ServingConfig(artifact_dir=run, api_keys_file=str(bad)))
    assert API_KEYS[0] not in str(err.value)
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(KeyConfigError, match="no API keys"):
        create_app(ServingConfig(artifact_dir=run, api_keys_file=str(tmp_path / "empty")))
    # Open only when a setting says so: loopback with no keys (make demo), or HYMIREC_AUTH=off anywhere.
    assert ServingConfig(artifact_dir=run).auth_enabled() is False
    assert ServingConfig(artifact_dir=run, host="0.0.0.0", auth="off").auth_enabled() is False
    assert ServingConfig(artifact_dir=run, api_keys=(API_KEYS[0],)).auth_enabled() is True


def test_config_from_env_reads_guard_settings():
    from serving.config import ServingConfig, ServingConfigError

    cfg = ServingConfig.from_env({"HYMIREC_AUTH": "Required", "HYMIREC_API_KEYS": f"{API_KEYS[0]}, {API_KEYS[1]}",
                                  "HYMIREC_MAX_BODY_BYTES": "1024", "HYMIREC_RATE_LIMIT_RPS": "2.5",
                                  "HYMIREC_RATE_LIMIT_BURST": "7", "HYMIREC_API_KEYS_FILE": "/etc/keys"})
    assert cfg.auth == "required" and cfg.api_keys == API_KEYS and cfg.api_keys_file == "/etc/keys"
    assert (cfg.max_body_bytes, cfg.rate_limit_rps, cfg.rate_limit_burst) == (1024, 2.5, 7)
    assert API_KEYS[0] not in repr(cfg)
    with pytest.raises(ServingConfigError, match="HYMIREC_RATE_LIMIT_RPS must be a number"):
        ServingConfig.from_env({"HYMIREC_RATE_LIMIT_RPS": "fast"})
    with pytest.raises(ServingConfigError, match="auth must be one of"):
        ServingConfig.from_env({"HYMIREC_AUTH": "maybe"})
