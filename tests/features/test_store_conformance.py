"""One conformance suite for the online-store interface, run against every backend (Feast-SQLite, Feast-Redis)."""
from __future__ import annotations

import numpy as np
import pytest

from features.store import StoreConfig, StoreConfigError, UserState, open_store
from features.store.base import StateEvent, apply_events, pack_codes, unpack_codes

pytestmark = pytest.mark.services


def _state(uid: str, n: int = 5, layers: int = 3, seed: int = 0) -> UserState:
    rng = np.random.default_rng(seed)
    return UserState(uid, rng.integers(0, 65535, size=(n, layers)), [f"i{k}" for k in range(min(n, 4))],
                     [1000 + k for k in range(min(n, 4))], {0: 10 + n, 3: 7}, 1003, n)


@pytest.fixture
def store(store_kind, store_factory):
    return store_factory(store_kind)


def test_unknown_users_are_absent(store):
    assert store.read_users(["nobody", "nobody-else"]) == {}
    assert store.read_users([]) == {}
    assert store.history_nbytes("nobody") == 0


def test_roundtrip_exact(store):
    states = [_state(f"u{k}", n=k + 1, seed=k) for k in range(20)]
    store.write_users(states)
    got = store.read_users([s.user_id for s in states] + ["missing"])
    assert set(got) == {s.user_id for s in states}
    for s in states:
        assert got[s.user_id] == s
        assert got[s.user_id].codes.dtype == np.uint16


def test_overwrite_replaces_whole_row(store):
    store.write_users([_state("u", n=8)])
    smaller = UserState("u", np.zeros((1, 3)), ["x"], [5], {1: 2}, 5, 1)
    store.write_users([smaller])
    assert store.read_users(["u"])["u"] == smaller


def test_empty_history_and_unicode_ids(store):
    st = UserState("ü-ser ✓", np.zeros((0, 3)), [], [], {2: 0}, -1, 0)
    st2 = UserState("u:2", np.ones((2, 4)), ["ítem/1", "項目"], [1, 2], {0: 1}, 2, 2)
    store.write_users([st, st2])
    got = store.read_users([st.user_id, st2.user_id])
    assert got[st.user_id] == st and got[st2.user_id] == st2


def test_history_bytes(store):
    store.write_users([_state("u", n=1024, layers=3)])
    assert store.history_nbytes("u") == 1024 * 3 * 2


def test_item_codes(store):
    ids = [f"item-{k}" for k in range(300)]
    codes = np.random.default_rng(3).integers(0, 256, size=(300, 3))
    store.write_item_codes(ids, codes)
    got = store.read_item_codes(ids[:10] + ["nope"])
    assert set(got) == set(ids[:10])
    for k in range(10):
        np.testing.assert_array_equal(got[ids[k]], codes[k])
    with pytest.raises(ValueError):
        store.write_item_codes(ids[:2], codes[:3])


def test_feast_public_read_path(store):
    """Rows written through the interface read back through Feast's own get_online_features."""
    st = _state("pub", n=6)
    store.write_users([st])
    out = store.get_online_features(["pub", "ghost"], ["history_codes", "code_layers", "recent_item_ids",
                                                        "n_applied"])
    assert out["user_id"] == ["pub", "ghost"]
    assert unpack_codes(out["history_codes"][0], out["code_layers"][0]).tolist() == st.codes.tolist()
    assert out["recent_item_ids"][0] == st.recent_items
    assert out["n_applied"] == [6, None]


def test_reopen_sees_same_data(store_kind, store_factory, tmp_path):
    a = store_factory(store_kind, sub="shared")
    st = _state("persist", n=3)
    a.write_users([st])
    cfg = a.config
    a.close()
    b = open_store(cfg)
    try:
        assert b.read_users(["persist"])["persist"] == st
    finally:
        b.close()


def test_read_modify_write_cycle(store):
    """apply_events + write + read, as the processor does it, is idempotent per (partition, offset)."""
    evs = [StateEvent(1, k, f"i{k % 7}", 1000 + k, np.array([k, k + 1, k + 2])) for k in range(30)]
    st = UserState("rmw", np.zeros((0, 3)))
    for chunk in (evs[:10], evs[5:20], evs[:30]):
        cur = store.read_users(["rmw"]).get("rmw", st)
        new, _, _ = apply_events(cur, chunk, max_history=16, recent_n=8)
        store.write_users([new])
    final = store.read_users(["rmw"])["rmw"]
    assert final.n_applied == 30 and final.applied == {1: 29}
    assert final.codes.shape == (16, 3) and final.codes[-1].tolist() == [29, 30, 31]
    assert final.recent_items == [f"i{k % 7}" for k in range(22, 30)]


def test_fenced_write_refuses_an_offset_not_beyond_the_stored_one(store):
    """Compare-and-set on the per-partition offset: per partition, a write whose offset is <= the stored one is
    refused and changes nothing; the other partitions of the same call are written."""
    first = {0: (99, [_state("a", n=3, seed=1)]), 1: (50, [_state("b", n=3, seed=2)])}
    assert store.write_users_fenced("t", first) == set()
    assert store.read_fence("t") == {0: 99, 1: 50}
    newer_a, stale_b = _state("a", n=6, seed=3), _state("b", n=1, seed=4)
    refused = store.write_users_fenced("t", {0: (150, [newer_a]), 1: (50, [stale_b])})
    assert refused == {1}
    got = store.read_users(["a", "b"])
    assert got["a"] == newer_a and got["b"] == first[1][1][0]  # b keeps the row written with offset 50
    assert store.write_users_fenced("t", {0: (120, [_state("a", n=2, seed=5)])}) == {0}
    assert store.read_users(["a"])["a"] == newer_a
    assert store.read_fence("t") == {0: 150, 1: 50}
    assert store.read_fence("other-topic") == {}  # offsets are per topic
    assert store.write_users_fenced("other-topic", {1: (0, [_state("c")])}) == set()
    # rows written by the fenced path are read back unchanged by Feast's own read path
    cols = store.get_online_features(["a"], ["history_len", "n_applied"])
    assert cols["history_len"] == [6] and cols["n_applied"] == [newer_a.n_applied]


def test_fenced_write_from_two_store_clients(store_kind, store_factory, tmp_path):
    """Two processors = two store clients on the same backend: the one that comes second with an older offset
    is refused (the SQLite file is shared; the Redis clients share the Feast project)."""
    one = store_factory(store_kind, sub="one")
    if store_kind == "sqlite":
        other = store_factory("sqlite", sub="one")
    else:
        from features.store import open_store
        other = open_store(StoreConfig(**{**one.config.as_dict(), "registry_path": str(tmp_path / "reg2.db")}))
    assert one.write_users_fenced("t", {2: (500, [_state("x", n=4)])}) == set()
    assert other.write_users_fenced("t", {2: (400, [_state("x", n=1)])}) == {2}
    assert other.read_users(["x"])["x"] == _state("x", n=4)
    if store_kind == "redis":
        other.close()


# ---- pure parts (no backend) -------------------------------------------------------------------------------
def test_pack_unpack():
    codes = np.random.default_rng(0).integers(0, 65536, size=(17, 3)).astype(np.uint16)
    assert np.array_equal(unpack_codes(pack_codes(codes), 3), codes)
    assert unpack_codes(b"", 3).shape == (0, 3)


def test_apply_events_rules():
    e = lambda p, o, item, t: StateEvent(p, o, item, t, np.array([o, 0, 0]))  # noqa: E731
    st = UserState("u", np.zeros((0, 3)))
    new, n, skipped = apply_events(st, [e(0, 5, "a", 1), e(0, 3, "b", 2), e(0, 4, "a", 1), e(0, 6, "c", 0)],
                                   max_history=2, recent_n=10)
    # log order 3, 4, 5, 6: offset 5 repeats (a, 1) of offset 4 → duplicate
    assert n == 3 and skipped == {"already_applied": 0, "duplicate": 1}
    assert new.codes[:, 0].tolist() == [4, 6] and new.recent_items == ["b", "a", "c"]
    assert new.last_event_time_ms == 2 and new.applied == {0: 6}
    again, n2, sk2 = apply_events(new, [e(0, 4, "z", 9), e(0, 6, "z", 9)], 2, 10)
    assert again is new and n2 == 0 and sk2["already_applied"] == 2


def test_config_selection(monkeypatch, tmp_path):
    monkeypatch.setenv("HYMIREC_STORE_TYPE", "redis")
    monkeypatch.setenv("HYMIREC_REDIS_URL", "127.0.0.1:1")
    cfg = StoreConfig.from_env()
    assert cfg.type == "redis" and cfg.redis_url == "127.0.0.1:1"
    assert StoreConfig.from_env(type="sqlite").type == "sqlite"
    with pytest.raises(StoreConfigError, match="unknown store type 'cassandra'"):
        StoreConfig.from_env(type="cassandra")
    (tmp_path / "s.yaml").write_text("type: sqlite\nsqlite_path: x.db\nmax_history: 64\n")
    assert StoreConfig.from_file(tmp_path / "s.yaml").max_history == 64
    (tmp_path / "bad.yaml").write_text("type: sqlite\ncolour: blue\n")
    with pytest.raises(StoreConfigError, match="colour"):
        StoreConfig.from_file(tmp_path / "bad.yaml")
