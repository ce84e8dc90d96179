"""Session fixtures for the serving tests: one synthetic run (real model classes, real exporters), the real
Feast SQLite store, Milvus Lite as a server process, the real tritonserver and the app on loopback."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devservices.stack import make_app_server, start_milvus_with_index  # noqa: E402
from devservices.triton import triton_models, triton_server  # noqa: E402,F401  (fixtures)
from tests.serving.guard_helpers import start_guarded_app, write_keys_dir  # noqa: E402

logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # outage tests make it log every failed RPC


@pytest.fixture(scope="session")
def serving_run(tmp_path_factory):
    from devservices.serving_run import make_serving_run

    return make_serving_run(tmp_path_factory.mktemp("serving") / "run")


@pytest.fixture(scope="session")
def llm_spec_(serving_run):
    from training.export.triton_repo import llm_spec

    d = serving_run["manifest"]["dims"]
    return llm_spec(d["n_coarse"], d["d_llm"], d["d_item"], d["n_interests"], d["d_out"])


@pytest.fixture(scope="session")
def triton_repo(serving_run, llm_spec_):
    """Local repository with versions 1 and 2 of "llm" (same graph: rollouts are told apart by version)."""
    from training.export.triton_repo import add_version

    layout = serving_run["layout"]
    repo = layout.triton_repo / "local"
    add_version(repo, layout.llm_onnx, llm_spec_, target="local")
    add_version(repo, layout.llm_onnx, llm_spec_, target="local")
    # Serve version 1 at start (the rollout test goes 1 → 2 → 1).
    (repo / "llm" / "served.json").write_text('{"version": 1, "history": [1]}')
    return repo


@pytest.fixture(scope="session")
def feast_store(serving_run, tmp_path_factory):
    from devservices.serving_run import open_test_store, user_states

    store, cfg_file = open_test_store(tmp_path_factory.mktemp("feast"))
    store.write_users(user_states(serving_run))
    try:
        yield store, cfg_file
    finally:
        store.close()


@pytest.fixture(scope="session")
def milvus(serving_run, tmp_path_factory):
    server = start_milvus_with_index(serving_run, tmp_path_factory.mktemp("milvus") / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def app_server(serving_run, triton_server, milvus, feast_store):
    server = make_app_server(serving_run, triton_server.grpc_url, milvus.uri, feast_store[1])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def http(app_server):
    import httpx

    with httpx.Client(base_url=app_server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def guarded_server(serving_run, milvus, feast_store, tmp_path_factory):
    server = start_guarded_app(serving_run, milvus, feast_store, write_keys_dir(tmp_path_factory.mktemp("keys")),
                               max_body_bytes=4096)
    try:
        yield server
    finally:
        server.stop()
