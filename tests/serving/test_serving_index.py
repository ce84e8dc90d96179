"""Milvus Lite item index: versioned collections, atomic alias swap, one search for K queries."""
from __future__ import annotations

import logging

import numpy as np

logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def test_versioned_collections_alias_swap_and_search(tmp_path):
    from serving.index import ItemIndex

    rng = np.random.default_rng(0)
    v = rng.standard_normal((1501, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[0] = 0
    uri = str(tmp_path / "milvus.db")
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
