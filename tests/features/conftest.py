"""Fixtures of the streaming-feature tests: one real Kafka broker and one real redis-server for the whole test
session (devservices), online stores of both backends, and helpers to produce events and compute the golden
store state offline from the same events."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
for _p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from devservices.kafka import KafkaBroker  # noqa: E402
from devservices.redis import RedisServer  # noqa: E402

from stream_support import N_ITEMS, N_LAYERS  # noqa: E402  (tests/features is on sys.path under pytest)


# ---- services (session scope: started once, stopped at the end) -------------------------------------------
@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    with KafkaBroker(tmp_path_factory.mktemp("kafka"), partitions=4) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


# ---- item codes: a small random table (no trained model needed) --------------------------------------------
@pytest.fixture(scope="session")
def item_table():
    rng = np.random.default_rng(1234)
    ids = [f"i{k}" for k in range(N_ITEMS)]
    codes = rng.integers(0, 256, size=(N_ITEMS, N_LAYERS)).astype(np.uint16)
    return ids, codes


@pytest.fixture(scope="session")
def item_codes_file(item_table, tmp_path_factory):
    from features.item_codes import save_item_codes
    ids, codes = item_table
    return save_item_codes(tmp_path_factory.mktemp("codes") / "item_codes.npz", ids, codes)


# ---- stores -------------------------------------------------------------------------------------------------
def make_store_config(kind: str, tmp_path: Path, redis_server=None, **kw):
    from features.store import StoreConfig
    if kind == "sqlite":
        return StoreConfig(type="sqlite", sqlite_path=str(tmp_path / "online.db"), **kw)
    return StoreConfig(type="redis", redis_url=redis_server.url, registry_path=str(tmp_path / "registry.db"),
                       project=f"t{uuid.uuid4().hex[:10]}", **kw)


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request):
    return request.param


@pytest.fixture
def store_factory(tmp_path, request):
    """store_factory(kind, **StoreConfig fields) -> an applied OnlineStore, closed after the test. Redis stores
    get their own Feast project, so tests sharing the session's redis-server never see each other's keys."""
    from features.store import open_store
    opened = []

    def make(kind: str, sub: str = "store", **kw):
        redis = request.getfixturevalue("redis_server") if kind == "redis" else None
        path = tmp_path / sub
        path.mkdir(exist_ok=True)
        store = open_store(make_store_config(kind, path, redis, **kw))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
