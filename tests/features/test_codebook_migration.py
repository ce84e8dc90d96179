"""Versioned codes and codebook migration (features/codebook_migration.py) on the project's synthetic data, against
real stores (Feast-SQLite and Feast-Redis, the fixtures of conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest

from features.codebook import CodebookConfig, ResidualCodebook
from features.codebook_migration import (CodebookLibrary, ItemCodeTable, UnknownCodebook, codebook_id_of,
                                         migrate_store, replay_codes, save_codebook, translate)
from features.store import StateEvent, UserState, apply_events
from training.datasets.synthetic import synthetic

MAX_HISTORY, RECENT_N = 64, 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic users and items; item embeddings E1 (old release) and E2 (new release: the same topics, moved),
    codebook C1 fitted on E1 and C2 on E2 (saved: their ids are the files' sha256), and both item-code tables."""
    data = synthetic(n_users=40, n_items=400, n_interests=6, seed=3, long_users=2, long_length=150)
    rng = np.random.default_rng(0)
    d = 24
    topics = rng.normal(size=(6, d))
    e1 = topics[data.item_categories[1:]] + 0.6 * rng.normal(size=(data.n_items, d))
    rot = np.linalg.qr(np.eye(d) + 0.3 * rng.normal(size=(d, d)))[0]  # the new space: rotated and re-noised
    e2 = e1 @ rot + 0.2 * rng.normal(size=e1.shape)
    cfg = CodebookConfig(n_layers=2, codebook_size=16, kmeans_iters=10)
    c1, c2 = ResidualCodebook.fit(e1, cfg), ResidualCodebook.fit(e2, CodebookConfig(n_layers=3, codebook_size=16))
    folder = tmp_path_factory.mktemp("codebooks")
    id1, id2 = save_codebook(c1, folder / "c1.npz"), save_codebook(c2, folder / "c2.npz")
    ids = data.item_ids[1:]
    return {"data": data, "e1": e1, "e2": e2, "c1": c1, "c2": c2, "id1": id1, "id2": id2, "folder": folder,
            "t1": ItemCodeTable(ids, c1.encode(e1)), "t2": ItemCodeTable(ids, c2.encode(e2)),
            "library": CodebookLibrary.from_paths([folder / "c1.npz", folder / "c2.npz"])}


def _user_rows(world, codebook_id: str = "", table_key: str = "t1") -> tuple[list[UserState], dict[str, list[str]]]:
    """Each synthetic user's row as the processor builds it (apply_events over the user's events, codes from the
    old table) and the user's log (applied item ids, oldest first)."""
    data, table = world["data"], world[table_key]
    rows, logs = [], {}
    for u, seq in zip(data.user_ids, data.sequences):
        items = [data.item_ids[i] for i in seq]
        codes, _ = table.lookup(items)
        events = [StateEvent(0, k, it, 1000 + k, codes[k]) for k, it in enumerate(items)]
        st, _, _ = apply_events(UserState(u, np.zeros((0, table.n_layers))), events, MAX_HISTORY, RECENT_N,
                                codebook_id=codebook_id)
        rows.append(st)
        logs[u] = items
    return rows, logs


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.einsum("nd,nd->n", a, b).mean())


# ---- pure parts -------------------------------------------------------------------------------------------------
def test_library_ids_are_file_hashes_and_unknown_ids_are_named(world):
    lib = world["library"]
    assert world["id1"] == codebook_id_of(world["folder"] / "c1.npz") and len(world["id1"]) == 64
    assert set(lib.ids()) == {world["id1"], world["id2"]} and world["id1"] in lib and len(lib) == 2
    assert lib.get(world["id2"]).config.n_layers == 3
    assert lib.add_file(world["folder"] / "c1.npz") == world["id1"] and len(lib) == 2  # same file, same id
    with pytest.raises(UnknownCodebook, match="'f00d' is not in the library") as err:
        lib.get("f00d")
    assert isinstance(err.value, KeyError)
    with pytest.raises(KeyError, match="empty id"):
        lib.get("")
    codes = world["t1"].codes[:5]
    assert lib.decode(codes, world["id1"]).shape == (5, 24)
    np.testing.assert_array_equal(lib.decode(codes, world["id1"]), world["c1"].decode(codes))
    assert lib.decode(np.zeros((0, 2), np.uint16), world["id1"]).shape == (0, 24)


def test_translate_shapes_and_quality(world):
    c1, c2, e2 = world["c1"], world["c2"], world["e2"]
    codes = world["t1"].codes  # [N, 2] under C1
    out = translate(codes, c1, c2)
    assert out.shape == (len(codes), 3) and out.dtype == np.uint16
    assert translate(codes[:0], c1, c2).shape == (0, 3)
    # decode→encode into C2 is closer to E1 than random C2 codes, but further from E2 than C2's own codes
    rand = np.random.default_rng(0).integers(0, 16, size=out.shape)
    assert _cos(world["e1"], c2.decode(out)) > _cos(world["e1"], c2.decode(rand)) + 0.2
    assert _cos(e2, c2.decode(world["t2"].codes)) > _cos(e2, c2.decode(out))
    other = ResidualCodebook.fit(np.random.default_rng(1).normal(size=(200, 8)), CodebookConfig(1, 16))
    with pytest.raises(ValueError, match="d=24 and d=8"):
        translate(codes, c1, other)


def test_replay_codes_looks_up_the_new_table(world):
    t2 = world["t2"]
    items = world["data"].item_ids[1:6]
    codes, missing = replay_codes(items, t2)
    np.testing.assert_array_equal(codes, t2.codes[:5])
    assert missing == 0
    codes, missing = replay_codes(["nope", items[0]], t2)
    assert missing == 1 and codes.tolist() == [t2.codes[0].tolist()]  # dropped without a fallback
    codes, _ = replay_codes(["nope", items[0]], t2, fallback=np.full((2, 3), 7))
    assert codes.tolist() == [[7, 7, 7], t2.codes[0].tolist()]


# ---- migrations against real stores --------------------------------------------------------------------------------
@pytest.fixture
def store(store_kind, store_factory):
    return store_factory(store_kind)


def test_migrate_store_replays_logs_translates_the_rest_and_reports(world, store):
    lib, id1, id2, t2 = world["library"], world["id1"], world["id2"], world["t2"]
    rows, logs = _user_rows(world, id1)
    rows[0] = rows[0].with_codes(t2.lookup(logs[rows[0].user_id][-MAX_HISTORY:])[0], id2)  # already on C2
    rows[1] = rows[1].with_codes(rows[1].codes, "e" * 64)  # a codebook nobody kept
    rows[2] = rows[2].with_codes(rows[2].codes, "")  # written before codebook ids
    store.write_users(rows)
    with_log = {r.user_id: logs[r.user_id] for r in rows[:25]}
    users = [r.user_id for r in rows] + ["ghost"]
    report = migrate_store(store, users, lib, id2, log=with_log, item_codes=t2, batch=7, progress=False)
    assert report.already_current == 1 and report.unknown_codebook == 2 and report.no_row == 1
    assert report.unknown_ids == {"e" * 64: 1, "": 1}
    assert report.migrated == len(rows) - 3 and report.refused == 0 and report.refused_users == []
    assert report.replayed == 22 and report.translated == len(rows) - 25 and report.log_stale == 0
    got = store.read_users([r.user_id for r in rows])
    for r in rows[3:]:
        new = got[r.user_id]
        assert new.codebook_id == id2 and new.codes.shape == (r.codes.shape[0], 3)
        assert (new.recent_items, new.applied, new.n_applied) == (r.recent_items, r.applied, r.n_applied)
        if r.user_id in with_log:  # exactly what the processor would have written with C2 live all along
            np.testing.assert_array_equal(new.codes, t2.lookup(logs[r.user_id][-MAX_HISTORY:])[0])
        else:
            np.testing.assert_array_equal(new.codes, translate(r.codes, world["c1"], world["c2"]))
    assert got[rows[1].user_id] == rows[1] and got[rows[2].user_id] == rows[2]  # unknown: left alone
    # a second run finds nothing to do; legacy_id says what "" rows were encoded with
    again = migrate_store(store, users, lib, id2, log=with_log, item_codes=t2, legacy_id=id1, progress=False)
    assert again.migrated == 1 and again.already_current == len(rows) - 2 and again.unknown_codebook == 1
    assert store.read_users([rows[2].user_id])[rows[2].user_id].codebook_id == id2
    # after the migration the processor appends C2 codes; C1 codes would be refused
    st = store.read_users([rows[5].user_id])[rows[5].user_id]
    ev = [StateEvent(0, 10_000, "x", 5, np.array([1, 2, 3]))]
    assert apply_events(st, ev, MAX_HISTORY, RECENT_N, codebook_id=id2)[0].codes[-1].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="migrate the row"):
        apply_events(st, ev, MAX_HISTORY, RECENT_N, codebook_id=id1)


def test_partial_stale_and_missing_logs(world, store):
    """A log shorter than the history covers its newest part (the older part is translated); a log that does not
    end with the row's recent items is older than the row (decode→encode instead); logged items missing from the
    new table take their stored codes, translated."""
    lib, id1, id2, t2, c1, c2 = (world[k] for k in ("library", "id1", "id2", "t2", "c1", "c2"))
    rows, logs = _user_rows(world, id1)
    a, b, c = [r for r in rows if r.codes.shape[0] >= 30][:3]
    store.write_users([a, b, c])
    la = logs[a.user_id][-10:]
    lb = logs[b.user_id][:-1]  # misses the newest event: stale
    lc = list(logs[c.user_id][-c.codes.shape[0]:])
    lc[3] = "withdrawn-item"  # the new table lacks it
    report = migrate_store(store, [a.user_id, b.user_id, c.user_id], lib, id2,
                           log={a.user_id: la, b.user_id: lb, c.user_id: lc}, item_codes=t2, progress=False)
    assert (report.migrated, report.replayed, report.translated, report.log_stale) == (3, 2, 1, 1)
    assert report.items_not_in_table == 1
    got = store.read_users([a.user_id, b.user_id, c.user_id])
    n = a.codes.shape[0]
    np.testing.assert_array_equal(got[a.user_id].codes[:n - 10], translate(a.codes[:n - 10], c1, c2))
    np.testing.assert_array_equal(got[a.user_id].codes[n - 10:], t2.lookup(la)[0])
    np.testing.assert_array_equal(got[b.user_id].codes, translate(b.codes, c1, c2))
    expect_c = t2.lookup(lc)[0]
    expect_c[3] = translate(c.codes, c1, c2)[3]
    np.testing.assert_array_equal(got[c.user_id].codes, expect_c)


class _LiveProcessor:
    """Wraps a store: before each compare-and-set write, the 'processor' appends an event to some users' rows
    (``changes``: user → how many of the job's writes it interferes with)."""

    def __init__(self, store, changes: dict[str, int]):
        self.store, self.changes, self.offset = store, dict(changes), 100_000

    def __getattr__(self, name):
        return getattr(self.store, name)

    def write_users_if_unchanged(self, expected, new):
        for uid in [u for u in expected if self.changes.get(u, 0) > 0]:
            self.changes[uid] -= 1
            cur = self.store.read_users([uid])[uid]
            self.offset += 1
            ev = StateEvent(1, self.offset, f"live{self.offset}", self.offset, cur.codes[-1])
            self.store.write_users([apply_events(cur, [ev], MAX_HISTORY, RECENT_N)[0]])
        return self.store.write_users_if_unchanged(expected, new)


def test_rows_changed_by_the_live_processor_are_retried_then_reported(world, store):
    lib, id1, id2 = world["library"], world["id1"], world["id2"]
    rows, _ = _user_rows(world, id1)
    rows = rows[:6]
    store.write_users(rows)
    u = [r.user_id for r in rows]
    live = _LiveProcessor(store, {u[1]: 1, u[2]: 2, u[4]: 10})  # u4 changes on every attempt
    report = migrate_store(live, u, lib, id2, batch=3, retries=2, progress=False)
    assert report.migrated == 5 and report.refused == 1 and report.refused_users == [u[4]]
    got = store.read_users(u)
    assert got[u[4]].codebook_id == id1 and got[u[4]].n_applied == rows[4].n_applied + 3  # 3 attempts, all lost
    for k in (1, 2):  # the processor's appended event survived the migration (re-read, then rebuilt)
        assert got[u[k]].codebook_id == id2 and got[u[k]].n_applied == rows[k].n_applied + k
        assert got[u[k]].codes.shape[0] == min(MAX_HISTORY, rows[k].codes.shape[0] + k)
    assert report.attempts == 3 + 3  # batch 1: all, then u1+u2, then u2; batch 2: all, then u4 twice


def test_migrate_store_argument_checks(world, store):
    lib = world["library"]
    with pytest.raises(UnknownCodebook):
        migrate_store(store, ["a"], lib, "0" * 64, progress=False)
    with pytest.raises(ValueError, match="item-code table"):
        migrate_store(store, ["a"], lib, world["id2"], log={"a": ["x"]}, progress=False)
    with pytest.raises(ValueError, match="L=2"):
        migrate_store(store, ["a"], lib, world["id2"], log={}, item_codes=world["t1"], progress=False)
