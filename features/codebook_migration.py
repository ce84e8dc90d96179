"""Versioned codes: every stored history names the codebook that encoded it; a codebook refit migrates histories.

A codebook's id is the sha256 hex of its ``codebook.npz`` file (what ``orchestration/retrain.py`` passes as
``codebook_id`` to ``features.item_codes.write_item_codes``, and what ``UserState.codebook_id`` holds). Codes are
only meaningful with their own codebook: decoding a history with another codebook gives vectors unrelated to its
items (bench/codebook_migration.py measures how unrelated), so

* serving decodes each history with the codebook its row names (:meth:`CodebookLibrary.decode`);
* a refit migrates rows to the new codebook (:func:`migrate_store`), by one of two methods:
  - **log replay** (:func:`replay_codes`): the new codebook's item-code table looked up for the user's logged items,
    i.e. exactly the codes the processor would have written had the new codebook been live all along;
  - **decode → encode** (:func:`translate`): ``new.encode(old.decode(codes))``, for users without a log. Lossy twice
    (old quantisation, then new), and when the item embedding space itself changed with the refit it encodes
    old-space vectors into the new space's codebook.
* the stream processor never mixes two codebooks' codes in one history (``apply_events(..., codebook_id=...)``
  raises ``CodebookMismatch``).

Shapes: codes [n, L] (uint16 in the store), decoded vectors [n, d] float32; L and d may differ between codebooks.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from core.artifacts import sha256_file

from .codebook import ResidualCodebook
from .store.base import CODE_DTYPE, OnlineStore, UserState

logger = logging.getLogger(__name__)

LogSource = Mapping[str, Sequence[str]] | Callable[[str], Sequence[str] | None]


def codebook_id_of(path: str | os.PathLike) -> str:
    """A codebook's id: sha256 hex of its ``codebook.npz`` file (as orchestration/retrain.py computes it)."""
    return sha256_file(path)


def save_codebook(codebook: ResidualCodebook, path: str | os.PathLike) -> str:
    """``codebook.save(path)`` and return the file's id."""
    return codebook_id_of(codebook.save(path))


class UnknownCodebook(KeyError):
    """A codebook id that is not in the library (its codebook.npz was never added)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown codebook"


class CodebookLibrary:
    """id → :class:`ResidualCodebook`: every codebook still named by a stored row (serving keeps the releases whose
    rows are not migrated yet; a migration needs the old codebooks and the target)."""

    def __init__(self, codebooks: Mapping[str, ResidualCodebook] | None = None):
        self._books: dict[str, ResidualCodebook] = dict(codebooks or {})
        self.paths: dict[str, Path] = {}

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike]) -> "CodebookLibrary":
        lib = cls()
        for p in paths:
            lib.add_file(p)
        return lib

    def add_file(self, path: str | os.PathLike) -> str:
        """Load ``path`` (a codebook.npz; CodebookFormatError when corrupted) under its sha256; returns the id."""
        path = Path(path)
        codebook_id = codebook_id_of(path)
        if codebook_id not in self._books:
            self._books[codebook_id] = ResidualCodebook.load(path)
            self.paths[codebook_id] = path
        return codebook_id

    def add(self, codebook_id: str, codebook: ResidualCodebook) -> str:
        """Register an in-memory codebook under ``codebook_id`` (use :func:`save_codebook` to get a real id)."""
        self._books[codebook_id] = codebook
        return codebook_id

    def get(self, codebook_id: str) -> ResidualCodebook:
        """The codebook with that id; :class:`UnknownCodebook` (a KeyError) when it is not in the library."""
        try:
            return self._books[codebook_id]
        except KeyError:
            known = ", ".join(k[:12] for k in self._books) or "none"
            raise UnknownCodebook(f"codebook {codebook_id or '(empty id)'!r} is not in the library "
                                  f"(known: {known})") from None

    def decode(self, codes: np.ndarray, codebook_id: str) -> np.ndarray:
        """codes [n, L] of a history encoded by ``codebook_id`` → [n, d] float32 (codes-only decode, unit-norm
        space). What serving calls with ``state.codes, state.codebook_id``."""
        cb = self.get(codebook_id)
        codes = np.asarray(codes)
        if codes.shape[0] == 0:
            return np.zeros((0, cb.dim), np.float32)
        return cb.decode(codes)

    def __contains__(self, codebook_id: object) -> bool:
        return codebook_id in self._books

    def __len__(self) -> int:
        return len(self._books)

    def ids(self) -> list[str]:
        return list(self._books)


def translate(codes: np.ndarray, old: ResidualCodebook, new: ResidualCodebook) -> np.ndarray:
    """Decode → encode: codes [n, L_old] of ``old`` → codes [n, L_new] uint16 of ``new`` (= ``new.encode(
    old.decode(codes))``, codes-only decode). Needs the same embedding width d; n = 0 gives [0, L_new]."""
    codes = np.asarray(codes)
    if old.dim != new.dim:
        raise ValueError(f"cannot translate codes between codebooks of width d={old.dim} and d={new.dim}: "
                         "re-encode from the interaction log instead (replay_codes)")
    if codes.shape[0] == 0:
        return np.zeros((0, new.config.n_layers), CODE_DTYPE)
    return new.encode(old.decode(codes)).astype(CODE_DTYPE)


class ItemCodeTable:
    """item id → codes [L] under one codebook: the item-codes table written with it (``item_codes_table.npz`` of
    the retrain's codebook step, any file ``features.item_codes.load_item_codes`` reads)."""

    def __init__(self, item_ids: Sequence[str], codes: np.ndarray):
        self.codes = np.asarray(codes, dtype=CODE_DTYPE)
        if self.codes.ndim != 2 or self.codes.shape[0] != len(item_ids):
            raise ValueError(f"codes must be [{len(item_ids)}, L], got {self.codes.shape}")
        self.index = {str(i): k for k, i in enumerate(item_ids)}

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "ItemCodeTable":
        from .item_codes import load_item_codes
        return cls(*load_item_codes(path))

    @property
    def n_layers(self) -> int:
        return int(self.codes.shape[1])

    def lookup(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """→ (codes [n, L] uint16, zero rows where missing; found [n] bool)."""
        rows = np.fromiter((self.index.get(str(i), -1) for i in item_ids), np.int64, len(item_ids))
        found = rows >= 0
        out = np.zeros((len(rows), self.n_layers), CODE_DTYPE)
        out[found] = self.codes[rows[found]]
        return out, found


def replay_codes(item_ids: Sequence[str], table: ItemCodeTable,
                 fallback: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Re-encode from the interaction log: the codes [n, L] of the logged ``item_ids`` (oldest first) in the new
    codebook's item-code ``table``. An item the table lacks takes its row of ``fallback`` [n, L] (e.g. its stored
    codes translated) when given, else it is dropped. Returns (codes, number of items not in the table)."""
    codes, found = table.lookup(item_ids)
    missing = int((~found).sum())
    if missing:
        if fallback is not None:
            codes[~found] = np.asarray(fallback, dtype=CODE_DTYPE)[~found]
        else:
            codes = codes[found]
    return codes, missing


@dataclass
class MigrationReport:
    """What :func:`migrate_store` did. ``refused``: users whose row kept changing under the job (compare-and-set
    refused on every attempt); ``unknown_codebook``: users on a codebook the library lacks (left as they are)."""
    migrated: int = 0
    already_current: int = 0
    refused: int = 0
    unknown_codebook: int = 0
    no_row: int = 0
    replayed: int = 0  # migrated users rebuilt from the log (fully or partly)
    translated: int = 0  # migrated users rebuilt by decode → encode only
    log_stale: int = 0  # users whose log did not end with their stored recent items: decode → encode instead
    items_not_in_table: int = 0  # logged items the new item-code table lacks (their stored codes translated)
    attempts: int = 0  # compare-and-set writes issued (batches × rounds)
    seconds: float = 0.0
    unknown_ids: dict[str, int] = field(default_factory=dict)  # unknown codebook id → users
    refused_users: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _log_of(log: LogSource | None, user_id: str) -> Sequence[str] | None:
    if log is None:
        return None
    return log(user_id) if callable(log) else log.get(user_id)


def _plan(state: UserState, logged: Sequence[str] | None) -> tuple[int, list[str], bool]:
    """How to rebuild one row of n codes: (k, ids, stale) = translate the oldest k stored codes, replay the logged
    ``ids`` for the other n - k. The log is used only when it ends with the row's recent items (else it is older
    than the row: ``stale``); a log shorter than the history covers its newest part."""
    n = state.codes.shape[0]
    if logged is None or n == 0:
        return n, [], False
    ids = [str(i) for i in logged]
    recent = list(state.recent_items)
    if not ids or (recent and ids[-len(recent):] != recent):
        return n, [], True
    ids = ids[-n:]
    return n - len(ids), ids, False


@dataclass
class _Rebuilt:
    state: UserState  # the new row
    method: str  # "replay" (all or part of the codes from the log), "translate", "relabel" (legacy row on target)
    stale: bool = False
    missing: int = 0


def _rebuild(states: list[UserState], library: CodebookLibrary, target_id: str, log: LogSource | None,
             table: ItemCodeTable | None, legacy_id: str | None, report: MigrationReport) -> list[_Rebuilt]:
    """New rows (on ``target_id``) of the users in ``states`` that need one; counts the others (already current,
    unknown codebook) in ``report``. decode → encode runs once per old codebook over the whole batch."""
    target = library.get(target_id)
    work = []  # (state, old id, k translated, logged ids or None for a relabel, stale)
    for st in states:
        if st.is_on(target_id):
            report.already_current += 1
            continue
        old_id = st.codebook_id or legacy_id or ""
        if old_id == target_id:
            work.append((st, old_id, 0, None, False))  # a legacy row declared to be on the target
            continue
        if old_id not in library:
            report.unknown_codebook += 1
            report.unknown_ids[old_id] = report.unknown_ids.get(old_id, 0) + 1
            continue
        k, ids, stale = _plan(st, _log_of(log, st.user_id) if table is not None else None)
        work.append((st, old_id, k, ids, stale))
    # to translate, per old codebook: the oldest k codes, or all of them when some logged items are missing from
    # the new table (their stored codes, translated, stand in for them)
    by_old: dict[str, list[tuple[int, np.ndarray]]] = {}
    for j, (st, old_id, k, ids, _) in enumerate(work):
        if ids is not None:
            whole = bool(ids) and not table.lookup(ids)[1].all()
            by_old.setdefault(old_id, []).append((j, st.codes if whole else st.codes[:k]))
    translated: dict[int, np.ndarray] = {}
    for old_id, parts in by_old.items():
        flat = translate(np.concatenate([p for _, p in parts]), library.get(old_id), target)
        bounds = np.cumsum([0] + [p.shape[0] for _, p in parts])
        translated.update({j: flat[a:b] for (j, _), a, b in zip(parts, bounds[:-1], bounds[1:])})
    out = []
    for j, (st, old_id, k, ids, stale) in enumerate(work):
        if ids is None:
            out.append(_Rebuilt(st.with_codes(st.codes, target_id), "relabel"))
            continue
        tr = translated[j]
        if not ids:
            out.append(_Rebuilt(st.with_codes(tr, target_id), "translate", stale))
            continue
        fallback = tr[k:] if tr.shape[0] == st.codes.shape[0] else None
        replayed, missing = replay_codes(ids, table, fallback)
        out.append(_Rebuilt(st.with_codes(np.concatenate([tr[:k], replayed]), target_id), "replay", False, missing))
    return out


def migrate_store(store: OnlineStore, user_ids: Iterable[str], library: CodebookLibrary, target_id: str,
                  log: LogSource | None = None, item_codes: ItemCodeTable | None = None, batch: int = 500,
                  retries: int = 3, legacy_id: str | None = None, progress: bool = True) -> MigrationReport:
    """Move the rows of ``user_ids`` to codebook ``target_id``, next to a live stream processor.

    Per batch of users: read the rows, skip those already on ``target_id`` (or without codes), rebuild the others'
    codes — from the log where ``log`` has the user (``log[user]`` / ``log(user)``: the user's applied item ids,
    oldest first; looked up in ``item_codes``, the target codebook's item-code table), else by decode → encode
    (:func:`translate`) — and write them with ``store.write_users_if_unchanged``. Users refused because the
    processor changed their row meanwhile are read and rebuilt again, ``retries`` more times. Recent items,
    offsets and counters are kept; only codes and codebook_id change.

    A row on a codebook that ``library`` lacks is reported (``unknown_codebook``, ``unknown_ids``) and left alone,
    never re-encoded with a guessed codebook; rows written before codebook ids existed ("") are taken to be on
    ``legacy_id`` when it is given. Returns a :class:`MigrationReport`."""
    library.get(target_id)  # fail fast on an unknown target
    if log is not None and item_codes is None:
        raise ValueError("migrate_store: a log needs the target codebook's item-code table (item_codes=...)")
    if item_codes is not None and item_codes.n_layers != library.get(target_id).config.n_layers:
        raise ValueError(f"item_codes has L={item_codes.n_layers}, the target codebook "
                         f"{library.get(target_id).config.n_layers}")
    ids = list(dict.fromkeys(str(u) for u in user_ids))
    report = MigrationReport()
    started = time.perf_counter()
    from tqdm.auto import tqdm
    bar = tqdm(total=len(ids), desc="codebook migration", unit="user", disable=not progress)
    batch = max(1, int(batch))
    for start in range(0, len(ids), batch):
        pending = ids[start:start + batch]
        for attempt in range(retries + 1):
            states = store.read_users(pending)
            if attempt == 0:
                report.no_row += len(pending) - len(states)
            rebuilt = _rebuild(list(states.values()), library, target_id, log, item_codes, legacy_id, report)
            if not rebuilt:
                pending = []
                break
            report.attempts += 1
            refused = store.write_users_if_unchanged({r.state.user_id: states[r.state.user_id] for r in rebuilt},
                                                     [r.state for r in rebuilt])
            for r in rebuilt:
                if r.state.user_id not in refused:
                    report.migrated += 1
                    report.replayed += r.method == "replay"
                    report.translated += r.method == "translate"
                    report.log_stale += r.stale
                    report.items_not_in_table += r.missing
            pending = [r.state.user_id for r in rebuilt if r.state.user_id in refused]
            if not pending:
                break
            logger.debug("codebook migration: %d rows changed under the job, retrying (%d/%d)", len(pending),
                      attempt + 1, retries)
        report.refused += len(pending)
        report.refused_users += pending
        bar.update(len(ids[start:start + batch]))
        bar.set_postfix(migrated=report.migrated, refused=report.refused, unknown=report.unknown_codebook)
    bar.close()
    report.seconds = time.perf_counter() - started
    return report
