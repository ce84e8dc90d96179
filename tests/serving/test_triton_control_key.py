"""Triton's model-repository API restricted with a control key (HYMIREC_TRITON_CONTROL_KEY), against the real
tritonserver: index/load/unload without the key or with a wrong one are refused on gRPC and HTTP, with the key
they work (the promote path's rollout() reads it from the environment), and inference needs no key."""
from __future__ import annotations

import json
import secrets
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving.triton_access import CONTROL_HEADER, CONTROL_KEY_ENV, TritonError
from serving.triton_server import TritonControl, TritonServer, rollout

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def keyed(triton_repo, tmp_path_factory):
    from devservices.triton import triton_available

    reason = triton_available()
    if reason:
        pytest.fail(f"tritonserver is not set up: {reason}")
    # A private copy: this module's rollouts must not change the served.json the session server's tests read.
    repo = tmp_path_factory.mktemp("keyed") / "repo"
    shutil.copytree(triton_repo, repo)
    key = secrets.token_urlsafe(24)
    server = TritonServer(repo, ["llm"], control_key=key, log_path=repo.parent / "triton.log")
    server.start()  # loads v1 through the restricted API: the server's own control sends the key
    try:
        yield server, key
    finally:
        server.stop()


def _http(server, path, headers=None, body=b"{}"):
    req = urllib.request.Request(server.http_url + path, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_control_without_the_key_is_refused(keyed, monkeypatch):
    server, key = keyed
    monkeypatch.delenv(CONTROL_KEY_ENV, raising=False)
    for control in (TritonControl(server.grpc_url, server.repo), TritonControl(server.grpc_url, server.repo,
                                                                               control_key="not-the-key")):
        try:
            for call in (lambda: control.unload("llm"), lambda: control.load("llm", [2]),
                         lambda: control.ready_versions("llm")):
                with pytest.raises(TritonError, match="refused by Triton .* restricted") as err:
                    call()
                assert key not in str(err.value)
        finally:
            control.close()
    status, text = _http(server, "/v2/repository/models/llm/unload")
    assert status >= 400 and "restricted" in text.lower(), (status, text)
    status, _ = _http(server, "/v2/repository/models/llm/unload", {CONTROL_HEADER: "not-the-key"})
    assert status >= 400
    assert server.control.ready_versions("llm") == [1]  # nothing was unloaded or loaded
    assert key not in server.log_tail(100_000)  # Triton logs its options table, but not this flag


def test_control_with_the_key_works_and_inference_needs_none(keyed, serving_run, monkeypatch):
    import tritonclient.grpc as grpcclient

    from training.export.onnx_export import llm_cases, ort_session

    server, key = keyed
    monkeypatch.setenv(CONTROL_KEY_ENV, key)  # how the pipeline's promote step gets it (a Secret in its env)
    moved = rollout(server.repo, "llm", 2, server.grpc_url)
    assert moved["to"] == 2 and server.control.ready_versions("llm") == [2]
    status, text = _http(server, "/v2/repository/index", {CONTROL_HEADER: key})
    assert status == 200 and any(m.get("version") == "2" for m in json.loads(text)), text

    d = serving_run["manifest"]["dims"]
    case = next(iter(llm_cases(d["n_coarse"], d["d_llm"], d["d_item"], n=1, seed=3, max_n=4)))
    client = grpcclient.InferenceServerClient(server.grpc_url)  # serving's client: no headers at all
    try:
        assert client.is_model_ready("llm")
        inputs = []
        for name, arr in case.items():
            t = grpcclient.InferInput(name, list(arr.shape), "FP32")
            t.set_data_from_numpy(arr)
            inputs.append(t)
        got = client.infer("llm", inputs).as_numpy("interests")
    finally:
        client.close()
    np.testing.assert_allclose(got, ort_session(serving_run["layout"].llm_onnx).run(None, case)[0], atol=1e-5)

    server.control.unload("llm")
    assert server.control.ready_versions("llm") == []
    server.control.load("llm")  # served.json says 2
    assert server.control.ready_versions("llm") == [2]


def test_the_key_is_checked_before_start(tmp_path, monkeypatch):
    """A key Triton's flag parser would split (',', ':' or '=') is refused by name, and never echoed."""
    from serving.triton_access import control_key_from_env

    with pytest.raises(TritonError, match=CONTROL_KEY_ENV) as err:
        control_key_from_env({CONTROL_KEY_ENV: "abc,def=ghi"})
    assert "abc,def" not in str(err.value)
    assert control_key_from_env({CONTROL_KEY_ENV: "  "}) is None
