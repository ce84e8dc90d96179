"""The one interface the stream processor (writer) and the serving adapter (reader) use for the online store.

A user's row holds everything the processor needs for an atomic read-modify-write of that user:

* ``codes``           [n, L] uint16, the residual-codebook codes of the user's last n <= max_history items,
                      oldest first (the compressed long history read by serving);
* ``recent_items``    the last ``recent_n`` raw item ids, oldest first (exact embeddings for the LLM part),
  ``recent_times_ms`` and their event times (used to drop duplicate events);
* ``applied``         {partition: last applied offset}: an event at or before it is skipped (idempotence);
* ``last_event_time_ms`` / ``n_applied``: bookkeeping;
* ``codebook_id``     which codebook encoded ``codes``: the sha256 hex of its ``codebook.npz`` (what the retrain
                      passes to ``features.item_codes.write_item_codes``); "" for rows written before codebook
                      versions existed. Codes are only meaningful with their own codebook: serving decodes a
                      history with the codebook its id names, and a refit migrates rows
                      (``features.codebook_migration``) rather than mixing two codebooks' codes in one history.

Backends store the whole row in one Feast feature view, so a user's row is written atomically (one Redis
HSET, one SQLite transaction per batch). :func:`apply_events` is the pure update rule; backends only store.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

CODE_DTYPE = np.uint16


@dataclass
class UserState:
    user_id: str
    codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), CODE_DTYPE))
    recent_items: list[str] = field(default_factory=list)
    recent_times_ms: list[int] = field(default_factory=list)
    applied: dict[int, int] = field(default_factory=dict)
    last_event_time_ms: int = -1
    n_applied: int = 0
    codebook_id: str = ""

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=CODE_DTYPE)
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be [n, L], got shape {self.codes.shape}")
        self.codebook_id = str(self.codebook_id or "")

    def with_codes(self, codes: np.ndarray, codebook_id: str) -> "UserState":
        """A copy whose history is ``codes`` [n, L'] (uint16-castable), encoded by ``codebook_id``; everything else
        (recent items, applied offsets, counters) is kept. What a codebook migration writes."""
        return replace(self, codes=np.asarray(codes, dtype=CODE_DTYPE), codebook_id=codebook_id,
                       recent_items=list(self.recent_items), recent_times_ms=list(self.recent_times_ms),
                       applied=dict(self.applied))

    def is_on(self, codebook_id: str) -> bool:
        """True when the stored codes are ``codebook_id``'s, or when there are no codes to be anyone's."""
        return self.codebook_id == codebook_id or self.codes.shape[0] == 0

    @property
    def n_layers(self) -> int:
        return int(self.codes.shape[1])

    def is_applied(self, partition: int, offset: int) -> bool:
        return offset <= self.applied.get(partition, -1)

    def as_dict(self) -> dict:
        return {
            "user_id": self.user_id,
            "codes": self.codes.tolist(),
            "recent_items": list(self.recent_items),
            "recent_times_ms": [int(t) for t in self.recent_times_ms],
            "applied": {int(k): int(v) for k, v in sorted(self.applied.items())},
            "last_event_time_ms": int(self.last_event_time_ms),
            "n_applied": int(self.n_applied),
            "codebook_id": self.codebook_id,
        }

    def content(self) -> dict:
        """What serving sees (codes, the codebook that decodes them, recent items), without the Kafka bookkeeping."""
        d = self.as_dict()
        return {k: d[k] for k in ("user_id", "codes", "codebook_id", "recent_items", "recent_times_ms",
                                  "last_event_time_ms", "n_applied")}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserState) and self.as_dict() == other.as_dict()


@dataclass(frozen=True)
class StateEvent:
    """One validated, mapped event ready to be applied to a user's state."""
    partition: int
    offset: int
    item_id: str
    event_time_ms: int
    codes: np.ndarray  # [L]


class CodebookMismatch(ValueError):
    """A user's stored codes belong to another codebook than the events' codes: the row must be migrated
    (``features.codebook_migration``) before events encoded with the new codebook are appended to it."""

    def __init__(self, user_id: str, stored_id: str, new_id: str):
        self.user_id, self.stored_id, self.new_id = user_id, stored_id, new_id
        super().__init__(f"user {user_id!r}: stored history is encoded with codebook {stored_id[:12]}…, the events "
                         f"with codebook {new_id[:12]}…; migrate the row (features.codebook_migration) before "
                         f"appending (full ids: {stored_id} vs {new_id})")


def apply_events(state: UserState, events: Iterable[StateEvent], max_history: int,
                 recent_n: int, codebook_id: str | None = None) -> tuple[UserState, int, dict[str, int]]:
    """Append ``events`` (any order; applied in (partition, offset) order) to ``state``.

    Returns (new state, number applied, {skip reason: count}). Skip reasons: ``already_applied`` (at or
    before the user's last applied offset of that partition: a replay or a restart after a crash) and
    ``duplicate`` (same item and event time as one of the user's last ``recent_n`` applied events).
    The rule depends only on the log order, never on how the log was cut into batches.

    ``codebook_id``: the codebook that encoded the events' codes. When given, a state holding codes under another
    non-empty codebook id raises :class:`CodebookMismatch` (nothing is mixed, nothing is relabelled), and the new
    state records ``codebook_id``. A row written before codebook ids existed ("" with codes) is taken to be on
    ``codebook_id``: before versions, a refit meant rebuilding every history by a replay. None (the default) keeps
    the state's id, as before.
    """
    if codebook_id is not None and state.codebook_id and state.codebook_id != codebook_id \
            and state.codes.shape[0] > 0:
        raise CodebookMismatch(state.user_id, state.codebook_id, codebook_id)
    events = sorted(events, key=lambda e: (e.partition, e.offset))
    skipped = {"already_applied": 0, "duplicate": 0}
    applied = dict(state.applied)
    recent = list(zip(state.recent_items, state.recent_times_ms))
    seen = set(recent)
    new_codes: list[np.ndarray] = []
    last_time = state.last_event_time_ms
    n_new = 0
    for ev in events:
        if ev.offset <= applied.get(ev.partition, -1):
            skipped["already_applied"] += 1
            continue
        applied[ev.partition] = ev.offset
        key = (ev.item_id, int(ev.event_time_ms))
        if key in seen:
            skipped["duplicate"] += 1
            continue
        new_codes.append(np.asarray(ev.codes, dtype=CODE_DTYPE).reshape(-1))
        recent.append(key)
        seen.add(key)
        if len(recent) > recent_n:
            seen.discard(recent.pop(0))  # keys in the window are unique (a duplicate is never added)
        last_time = max(last_time, int(ev.event_time_ms))
        n_new += 1
    if not n_new and applied == state.applied:
        return state, 0, skipped
    codes = state.codes
    if new_codes:
        block = np.stack(new_codes)
        if codes.shape[0] == 0:
            codes = block
        else:
            if codes.shape[1] != block.shape[1]:
                raise ValueError(f"user {state.user_id}: stored history has L={codes.shape[1]} codes per item,"
                                 f" new events have L={block.shape[1]}")
            codes = np.concatenate([codes, block])
        codes = codes[-max_history:]
    new_state = UserState(
        user_id=state.user_id, codes=codes,
        recent_items=[k[0] for k in recent], recent_times_ms=[k[1] for k in recent],
        applied=applied, last_event_time_ms=last_time, n_applied=state.n_applied + n_new,
        codebook_id=state.codebook_id if codebook_id is None else codebook_id)
    return new_state, n_new, skipped


def pack_codes(codes: np.ndarray) -> bytes:
    """[n, L] codes → little-endian uint16 bytes (2·n·L bytes)."""
    return np.ascontiguousarray(codes, dtype="<u2").tobytes()


def unpack_codes(blob: bytes | None, n_layers: int) -> np.ndarray:
    if not blob or n_layers <= 0:
        return np.zeros((0, max(n_layers, 0)), CODE_DTYPE)
    return np.frombuffer(blob, dtype="<u2").reshape(-1, n_layers).astype(CODE_DTYPE)


class StoreError(RuntimeError):
    """The online store could not be reached or refused a read/write."""


class OnlineStore(ABC):
    """Online store of user histories and item codes. Implementations: feast_sqlite, feast_redis."""

    kind: str = "abstract"

    @abstractmethod
    def apply(self) -> None:
        """Register the feature definitions (feast apply) and create tables; idempotent."""

    @abstractmethod
    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the users that have one (unknown users are absent from the result)."""

    @abstractmethod
    def write_users(self, states: Sequence[UserState]) -> None:
        """Write whole user rows; each user's row is replaced atomically."""

    @abstractmethod
    def write_users_fenced(self, topic: str, parts: Mapping[int, tuple[int, Sequence[UserState]]]) -> set[int]:
        """Compare-and-set write for the stream processor: ``parts`` maps partition → (the batch's last offset of
        that partition, the rows changed by its events). In one transaction, a partition whose stored offset (for
        ``topic``) is >= the batch's is refused (its rows are not written); the others' rows are written and their
        stored offsets set. Returns the refused partitions.

        Why: a consumer that lost its partitions (paused past max.poll.interval.ms) still holds rows it read
        before its successor wrote newer ones; its late write must not replace them. Every event at or before the
        stored offset is already in the store, so a refused batch loses nothing."""

    @abstractmethod
    def write_users_if_unchanged(self, expected: Mapping[str, UserState | None],
                                 new: Sequence[UserState]) -> set[str]:
        """Compare-and-set per user, for a job writing next to the live stream processor (a codebook migration):
        ``new``'s row of a user is written only if the user's stored row still equals ``expected[user]`` (None:
        the user has no row). Returns the refused user ids; their rows are left as they are (read them again and
        retry). Every user of ``new`` must be a key of ``expected``. SQLite decides in one transaction; Redis with
        WATCH/MULTI/EXEC (per batch, then per user when the batch keeps conflicting)."""

    @abstractmethod
    def read_fence(self, topic: str) -> dict[int, int]:
        """{partition: last offset written} of ``topic`` (what :meth:`write_users_fenced` compares with)."""

    @abstractmethod
    def write_item_codes(self, item_ids: Sequence[str], codes: np.ndarray) -> None:
        """Push [N, L] codes of items into the item-codes feature view."""

    @abstractmethod
    def read_item_codes(self, item_ids: Sequence[str], codebook_id: str | None = None) -> dict[str, np.ndarray]:
        """Codes [L] of the items that have them; with ``codebook_id``, only codes written under that codebook
        (a processor on one release never picks up codes another release's codebook produced)."""

    def history_nbytes(self, user_id: str) -> int:
        """Bytes of the stored code history of one user (0 when unknown)."""
        st = self.read_users([user_id]).get(user_id)
        return 0 if st is None else int(st.codes.size * 2)

    def close(self) -> None:  # pragma: no cover - default no-op
        pass

    def __enter__(self) -> "OnlineStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
