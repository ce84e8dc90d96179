"""One conformance suite for the online-store interface, run against every backend (Feast-SQLite, Feast-Redis)."""
from __future__ import annotations

import numpy as np
import pytest

from features.store import StoreConfig, StoreConfigError, UserState, open_store
from features.store.base import CodebookMismatch, StateEvent, apply_events, pack_codes, unpack_codes

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


def test_item_codes_read_under_one_codebook(store):
    """A reader on one release asks for codes of its codebook only: another codebook's are left out."""
    store.write_item_codes(["a", "b"], np.array([[1, 2, 3], [4, 5, 6]]), codebook_id="cb-old")
    store.write_item_codes(["b", "c"], np.array([[7, 8, 9], [1, 1, 1]]), codebook_id="cb-new")
    assert set(store.read_item_codes(["a", "b", "c"])) == {"a", "b", "c"}
    got = store.read_item_codes(["a", "b", "c"], codebook_id="cb-new")
    assert set(got) == {"b", "c"} and got["b"].tolist() == [7, 8, 9]
    assert set(store.read_item_codes(["a", "b", "c"], codebook_id="cb-old")) == {"a"}


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


CB_OLD, CB_NEW = "a" * 64, "b" * 64  # codebook ids are sha256 hex digests of codebook.npz files


def test_codebook_id_roundtrip_and_rows_without_one(store):
    """codebook_id is stored by every backend; a row written before codebook versions (no codebook_id field) reads
    back as "" with the rest unchanged."""
    on_old = UserState("v1", np.arange(6).reshape(2, 3), ["x", "y"], [1, 2], {0: 4}, 2, 2, codebook_id=CB_OLD)
    empty = UserState("v0", np.zeros((0, 3)), codebook_id=CB_NEW)
    store.write_users([on_old, empty])
    got = store.read_users(["v1", "v0"])
    assert got["v1"] == on_old and got["v1"].codebook_id == CB_OLD and got["v0"].codebook_id == CB_NEW
    assert got["v1"].content()["codebook_id"] == CB_OLD
    assert got["v1"] != on_old.with_codes(on_old.codes, CB_NEW)  # the id is part of the row's equality
    assert store.get_online_features(["v1"], ["codebook_id"])["codebook_id"] == [CB_OLD]
    # a legacy row: what Feast wrote before the field existed (every feature but codebook_id)
    legacy = UserState("legacy", np.ones((3, 3)), ["i"], [7], {1: 9}, 7, 3)
    row = store._user_rows([legacy])[0]
    del row[1]["codebook_id"]
    store._provider.online_write_batch(store.repo_config, store._view("user_history"), [row], None)
    back = store.read_users(["legacy"])["legacy"]
    assert back == legacy and back.codebook_id == ""


def test_write_users_if_unchanged_is_a_compare_and_set_per_user(store):
    """A migration job's write: each user's new row lands only if the stored row still equals the one it read."""
    a, b = _state("a", n=3, seed=1), _state("b", n=4, seed=2)
    store.write_users([a, b])
    read = store.read_users(["a", "b", "c"])
    # the live processor appends to b between the job's read and its write
    b_live = UserState("b", np.vstack([b.codes, [[1, 2, 3]]]), b.recent_items, b.recent_times_ms, {0: 99, 3: 7},
                       2000, b.n_applied + 1)
    store.write_users([b_live])
    new = [read["a"].with_codes(read["a"].codes[:, ::-1], CB_NEW), read["b"].with_codes(read["b"].codes, CB_NEW),
           UserState("c", np.zeros((1, 3)), codebook_id=CB_NEW)]
    refused = store.write_users_if_unchanged({"a": read["a"], "b": read["b"], "c": read.get("c")}, new)
    assert refused == {"b"}
    got = store.read_users(["a", "b", "c"])
    assert got["a"] == new[0] and got["b"] == b_live and got["c"] == new[2]  # c: expected None = "no row"
    # c now has a row: expecting none is refused; expecting the stored row is accepted
    c2 = new[2].with_codes(np.ones((2, 3)), CB_NEW)
    assert store.write_users_if_unchanged({"c": None}, [c2]) == {"c"}
    assert store.write_users_if_unchanged({"c": got["c"]}, [c2]) == set()
    assert store.read_users(["c"])["c"] == c2
    assert store.write_users_if_unchanged({}, []) == set()
    with pytest.raises(ValueError, match="no expected row"):
        store.write_users_if_unchanged({"a": got["a"]}, [c2])


def test_write_users_if_unchanged_from_two_store_clients(store_kind, store_factory, tmp_path):
    """The migration job and the processor are separate clients: the job's write is refused for a row the other
    client changed after the job read it."""
    job = store_factory(store_kind, sub="cas")
    if store_kind == "sqlite":
        live = store_factory("sqlite", sub="cas")
    else:
        live = open_store(StoreConfig(**{**job.config.as_dict(), "registry_path": str(tmp_path / "reg-cas.db")}))
    try:
        rows = [_state(f"u{k}", n=3, seed=k) for k in range(6)]
        live.write_users(rows)
        read = job.read_users([r.user_id for r in rows])
        live.write_users([_state("u2", n=5, seed=50), _state("u4", n=1, seed=51)])
        refused = job.write_users_if_unchanged(read, [read[u].with_codes(read[u].codes, CB_NEW) for u in read])
        assert refused == {"u2", "u4"}
        got = live.read_users(list(read))
        assert {u for u, st in got.items() if st.codebook_id == CB_NEW} == {"u0", "u1", "u3", "u5"}
        assert got["u2"] == _state("u2", n=5, seed=50)
    finally:
        if store_kind == "redis":
            live.close()


def test_write_users_if_unchanged_races_a_write_between_read_and_exec(redis_server, store_factory, tmp_path,
                                                                     monkeypatch):
    """Redis only (SQLite holds the write lock from its read to its write, so nothing can land in between): a row
    changed by another client after the WATCHed read fails the EXEC; the batch is decided again and that user is
    refused. With the batch conflicting every time, the per-user fallback still writes the others."""
    import features.store.feast_redis as fr
    job = store_factory("redis", sub="race")
    live = open_store(StoreConfig(**{**job.config.as_dict(), "registry_path": str(tmp_path / "reg-race.db")}))
    try:
        rows = {f"r{k}": _state(f"r{k}", n=2, seed=k) for k in range(4)}
        live.write_users(list(rows.values()))
        read = job.read_users(list(rows))
        real_read, calls = job.read_users, []

        def read_then_interfere(ids):
            out = real_read(ids)
            calls.append(len(ids))
            if len(calls) == 1:  # after the first WATCHed read: the live processor writes r1
                live.write_users([_state("r1", n=9, seed=90)])
            return out

        monkeypatch.setattr(job, "read_users", read_then_interfere)
        new = [read[u].with_codes(read[u].codes, CB_NEW) for u in read]
        assert job.write_users_if_unchanged(read, new) == {"r1"}
        assert calls == [4, 4]  # the first EXEC failed, the second decided on the new rows
        got = live.read_users(list(rows))
        assert got["r1"] == _state("r1", n=9, seed=90) and all(got[u] == n for u, n in zip(read, new) if u != "r1")

        # the batch is not tried (as if it conflicted every time): one WATCH per user; r2 changes right after its
        # own WATCHed read, so its EXEC fails and it is refused; the others are written
        monkeypatch.setattr(fr, "_CAS_BATCH_ATTEMPTS", 0)

        def interfere_with_r2(ids):
            out = real_read(ids)
            if ids == ["r2"]:
                live.write_users([_state("r2", n=7, seed=92)])
            return out

        monkeypatch.setattr(job, "read_users", interfere_with_r2)
        read = real_read(list(rows))
        newer = [read[u].with_codes(read[u].codes[:, ::-1], CB_OLD) for u in read]
        assert job.write_users_if_unchanged(read, newer) == {"r2"}
        got = live.read_users(list(rows))
        assert got["r2"] == _state("r2", n=7, seed=92) and all(got[u] == n for u, n in zip(read, newer) if u != "r2")
    finally:
        live.close()


def test_apply_events_refuses_to_mix_codebooks(store):
    """apply_events with a codebook id: a row on another codebook raises (naming the user and both ids) instead of
    appending new codes to old ones; the stored row is untouched and stays readable."""
    ev = [StateEvent(0, k, f"i{k}", 10 + k, np.array([k, k, k])) for k in range(3)]
    first, n, _ = apply_events(UserState("m", np.zeros((0, 3))), ev[:2], 8, 4, codebook_id=CB_OLD)
    assert n == 2 and first.codebook_id == CB_OLD
    store.write_users([first])
    cur = store.read_users(["m"])["m"]
    with pytest.raises(CodebookMismatch, match="'m'") as err:
        apply_events(cur, ev[2:], 8, 4, codebook_id=CB_NEW)
    assert CB_OLD in str(err.value) and CB_NEW in str(err.value) and isinstance(err.value, ValueError)
    assert (err.value.user_id, err.value.stored_id, err.value.new_id) == ("m", CB_OLD, CB_NEW)
    # same codebook, or no codebook id (the callers that predate versions): appended, id kept
    same, n, _ = apply_events(cur, ev[2:], 8, 4, codebook_id=CB_OLD)
    legacy_call, _, _ = apply_events(cur, ev[2:], 8, 4)
    assert n == 1 and same == legacy_call and same.codebook_id == CB_OLD and same.codes.shape == (3, 3)
    # after a migration the new codebook's events are accepted
    migrated = cur.with_codes(cur.codes[:, ::-1], CB_NEW)
    store.write_users([migrated])
    new, n, _ = apply_events(store.read_users(["m"])["m"], ev[2:], 8, 4, codebook_id=CB_NEW)
    assert n == 1 and new.codebook_id == CB_NEW and new.codes[:2].tolist() == cur.codes[:, ::-1].tolist()
    # a row without codes, or one written before codebook ids (""), takes the events' codebook
    assert apply_events(UserState("e", np.zeros((0, 3)), codebook_id=CB_OLD), ev, 8, 4,
                        codebook_id=CB_NEW)[0].codebook_id == CB_NEW
    assert apply_events(UserState("l", np.ones((1, 3))), ev, 8, 4, codebook_id=CB_NEW)[0].codebook_id == CB_NEW


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
