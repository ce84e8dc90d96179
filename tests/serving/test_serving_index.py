"""The item index against both Milvus backends (one conformance suite): the Milvus standalone server the project
starts (the default for serving, tests and benchmarks) and Milvus Lite (a local file, the zero-setup option).
Versioned collections, atomic alias swap, one search for K queries."""
from __future__ import annotations

import logging
import socket
import subprocess

import numpy as np
import pytest

logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    from devservices.milvus_standalone import MilvusStandalone

    server = MilvusStandalone(tmp_path_factory.mktemp("milvus-standalone")).start()
    yield server
    server.stop()


@pytest.fixture(params=["standalone", "lite"])
def milvus_uri(request, tmp_path):
    if request.param == "lite":
        return str(tmp_path / "milvus.db")
    uri = request.getfixturevalue("standalone").uri
    from serving.index import drop_all

    drop_all(uri, "hymirec_items")  # each test starts from an empty server
    return uri


def test_versioned_collections_alias_swap_and_search(milvus_uri):
    from serving.index import ItemIndex

    rng = np.random.default_rng(0)
    v = rng.standard_normal((1501, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[0] = 0
    uri = milvus_uri
    index = ItemIndex(uri, keep=2).start()
    try:
        assert index.version is None  # nothing built yet
        builds = [index.build(v) for _ in range(3)]
        assert [b.version for b in builds] == [1, 2, 3] and builds[-1].n_items == 1500
        assert index.version == "hymirec_items_v3"
        assert sorted(index.client.list_collections()) == ["hymirec_items_v2", "hymirec_items_v3"]  # keep=2
        ids, scores = index.search(v[[5, 77, 1200]], 10)  # HNSW (default), nq = 3 in one call
        assert ids.shape == (3, 10) and list(ids[:, 0]) == [5, 77, 1200]
        assert np.all(np.diff(scores, axis=1) <= 1e-6)
        assert 0 not in set(ids.ravel().tolist())  # the padding row is never indexed
    finally:
        index.close()
    reopened = ItemIndex(uri).start()  # a new reader resolves the alias to the newest version
    try:
        assert reopened.version == "hymirec_items_v3"
        assert reopened.search(v[9:10], 1)[0][0, 0] == 9
    finally:
        reopened.close()


def test_release_collections_keep_the_served_one_and_the_rollback_target(tmp_path):
    """A release's collection is built without the alias (promote points it later); pruning never drops the
    collection behind the alias nor a named rollback target; a search can pin a collection by name."""
    from serving.index import ItemIndex

    v = np.eye(8, dtype=np.float32)
    v[0] = 0
    index = ItemIndex(str(tmp_path / "milvus.db"), keep=2).start()
    try:
        first = index.build(v)  # served
        second = index.build(v[::-1].copy(), swap_alias=False)  # a candidate: the alias stays on v1
        assert index.refresh() == first.collection
        index.point_alias(second.collection)  # promote of release 2
        third = index.build(v, swap_alias=False, keep_also=(first.collection,))  # 1 is the rollback target
        assert sorted(index.client.list_collections()) == [first.collection, second.collection, third.collection]
        fourth = index.build(v, swap_alias=False)  # nothing protects v1 or v3 any more; v2 is served
        assert sorted(index.client.list_collections()) == [second.collection, third.collection, fourth.collection]
        assert index.refresh() == second.collection
        assert index.search(v[3:4], 1, collection=fourth.collection)[0][0, 0] == 3
        assert index.search(v[3:4], 1)[0][0, 0] == 4  # through the alias: v2 holds the reversed rows
    finally:
        index.close()


def test_upsert_adds_items_to_the_served_collection(milvus_uri):
    """New items between retrains: upserted under new indices into the collection behind the alias, searchable
    without a rebuild (Bounded reads: within seconds on the server)."""
    import time

    from serving.index import IndexUnavailable, ItemIndex

    rng = np.random.default_rng(3)
    v = rng.standard_normal((201, 8)).astype(np.float32)
    new = rng.standard_normal((2, 8)).astype(np.float32) * 10  # long vectors: top-1 for themselves under IP
    index = ItemIndex(milvus_uri, index_type="FLAT").start(load=False)
    try:
        with pytest.raises(IndexUnavailable, match="build the index first"):
            index.upsert(np.array([201]), new[:1])
        index.build(v)
        with pytest.raises(ValueError, match="ids > 0"):
            index.upsert(np.array([0]), new[:1])
        assert index.upsert(np.array([201, 202]), new) == 2
        deadline = time.monotonic() + 30
        while list(index.search(new, 1)[0][:, 0]) != [201, 202] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert list(index.search(new, 1)[0][:, 0]) == [201, 202]
        assert index.version == "hymirec_items_v1"  # same collection, no new version
    finally:
        index.close()


def test_standalone_is_reachable_on_loopback_only(standalone):
    """Milvus 2.3 binds every interface; the server runs in its own network namespace, so on this host only the
    loopback relay listens, and none of Milvus' own ports (proxy 19530, etcd 2379) answers on a non-loopback address."""
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line for line in listening if f":{standalone.port} " in line]
    assert ours and all("127.0.0.1:" in line for line in ours), ours
    addresses = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
                 if ":" not in a and not a.startswith("127.")]
    for address in addresses:
        for port in (standalone.port, 19530, 2379):
            with socket.socket() as s:
                s.settimeout(0.5)
                assert s.connect_ex((address, port)) != 0, f"{address}:{port} answers"


def test_standalone_survives_a_kill_with_its_index(standalone):
    """kill -9 and start again on the same data: the alias and its collection come back, searchable."""
    from serving.index import ItemIndex, drop_all

    drop_all(standalone.uri, "hymirec_items")
    v = np.random.default_rng(1).standard_normal((301, 8)).astype(np.float32)
    index = ItemIndex(standalone.uri, index_type="FLAT").start(load=False)
    try:
        index.build(v)
    finally:
        index.close()
    standalone.kill()
    standalone.start()
    reopened = ItemIndex(standalone.uri, timeout_s=30.0).start()
    try:
        assert reopened.version == "hymirec_items_v1"
        exact = np.argsort(-(v[1:] @ v[42]))[:5] + 1
        assert list(reopened.search(v[42:43], 5)[0][0]) == list(exact)
    finally:
        reopened.close()


# ------------------------------------------------------------------------------------------ Milvus token
class _RecordingClient:
    """Stands in for pymilvus.MilvusClient: records the constructor's arguments, makes no connection."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        type(self).calls.append(kwargs)


def _record_clients(monkeypatch) -> list[dict]:
    import pymilvus

    _RecordingClient.calls = []
    monkeypatch.setattr(pymilvus, "MilvusClient", _RecordingClient)
    return _RecordingClient.calls


def test_milvus_token_reaches_the_client(monkeypatch):
    """HYMIREC_MILVUS_TOKEN (the chart's externalMilvus Secret) is what MilvusClient gets as `token`: from the
    serving config, and from the environment for callers that pass only a URI (the retrain DAG's index tasks)."""
    from serving.config import ServingConfig
    from serving.index import ItemIndex
    from serving.request_path import RecommendPipeline

    calls = _record_clients(monkeypatch)
    monkeypatch.delenv("HYMIREC_MILVUS_TOKEN", raising=False)
    ItemIndex("http://milvus:19530").start(load=False)
    assert calls[-1] == {"uri": "http://milvus:19530", "token": "", "timeout": 5.0}

    ItemIndex("http://milvus:19530", token="root:Milvus").start(load=False)
    assert calls[-1]["token"] == "root:Milvus"

    monkeypatch.setenv("HYMIREC_MILVUS_TOKEN", "api-key-from-env")
    ItemIndex("http://milvus:19530").start(load=False)
    assert calls[-1]["token"] == "api-key-from-env"
    ItemIndex("http://milvus:19530", token="").start(load=False)  # an explicit "" sends none
    assert calls[-1]["token"] == ""

    config = ServingConfig.from_env({"HYMIREC_MILVUS_URI": "http://milvus:19530",
                                     "HYMIREC_MILVUS_TOKEN": " user:secret\n"})
    assert config.milvus_token == "user:secret"
    assert "user:secret" not in repr(config)  # a credential stays out of logged configs
    monkeypatch.setenv("HYMIREC_MILVUS_TOKEN", "not-this-one")  # the config's token wins over the environment
    pipeline = RecommendPipeline(config, history_source=object())
    pipeline.search.index.start(load=False)
    assert calls[-1] == {"uri": "http://milvus:19530", "token": "user:secret", "timeout": config.milvus_timeout_s}
    assert ServingConfig.from_env({}).milvus_token == ""


def test_standalone_dies_with_the_process_that_started_it(tmp_path):
    """A test run that crashes leaves no Milvus (nor relay) behind: parent-death signals on every process."""
    import sys
    import time

    code = ("import os; from devservices.milvus_standalone import MilvusStandalone; "
            f"s = MilvusStandalone({str(tmp_path / 'orphan')!r}).start(); print(s.uri, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.returncode == 0 and out.stdout.startswith("http://127.0.0.1:"), out.stderr[-2000:]
    import psutil

    def left() -> list[str]:
        out = []
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if (proc.info["cwd"] or "").startswith(str(tmp_path / "orphan")) or str(tmp_path / "orphan") in cmd:
                out.append(cmd)
        return out

    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not left(), left()


def test_standalone_socket_path_fits_a_unix_socket():
    from devservices.milvus_standalone import MilvusStandalone

    assert MilvusStandalone("/tmp/short").socket_path.as_posix() == "/tmp/short/run/proxy.sock"
    deep = MilvusStandalone("/tmp/" + "d" * 150).socket_path
    assert len(str(deep)) < 108 and deep != MilvusStandalone("/tmp/" + "e" * 150).socket_path
