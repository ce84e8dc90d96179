"""The one interface the stream processor (writer) and the serving adapter (reader) use for the online store.

A user's row holds everything the processor needs for an atomic read-modify-write of that user:

* ``codes``           [n, L] uint16, the residual-codebook codes of the user's last n <= max_history items,
                      oldest first (the compressed long history read by serving);
* ``recent_items``    the last ``recent_n`` raw item ids, oldest first (exact embeddings for the LLM part),
  ``recent_times_ms`` and their event times (used to drop duplicate events);
* ``applied``         {partition: last applied offset}: an event at or before it is skipped (idempotence);
* ``last_event_time_ms`` / ``n_applied``: bookkeeping.

Backends store the whole row in one Feast feature view, so a user's row is written atomically (one Redis
HSET, one SQLite transaction per batch). :func:`apply_events` is the pure update rule; backends only store.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
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

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=CODE_DTYPE)
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be [n, L], got shape {self.codes.shape}")

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
        }

    def content(self) -> dict:
        """What serving sees (codes + recent items), without the Kafka bookkeeping."""
        d = self.as_dict()
        return {k: d[k] for k in ("user_id", "codes", "recent_items", "recent_times_ms",
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


def apply_events(state: UserState, events: Iterable[StateEvent], max_history: int,
                 recent_n: int) -> tuple[UserState, int, dict[str, int]]:
    """Append ``events`` (any order; applied in (partition, offset) order) to ``state``.

    Returns (new state, number applied, {skip reason: count}). Skip reasons: ``already_applied`` (at or
    before the user's last applied offset of that partition: a replay or a restart after a crash) and
    ``duplicate`` (same item and event time as one of the user's last ``recent_n`` applied events).
    The rule depends only on the log order, never on how the log was cut into batches.
    """
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
        applied=applied, last_event_time_ms=last_time, n_applied=state.n_applied + n_new)
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
    def read_fence(self, topic: str) -> dict[int, int]:
        """{partition: last offset written} of ``topic`` (what :meth:`write_users_fenced` compares with)."""

    @abstractmethod
    def write_item_codes(self, item_ids: Sequence[str], codes: np.ndarray) -> None:
        """Push [N, L] codes of items into the item-codes feature view."""

    @abstractmethod
    def read_item_codes(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Codes [L] of the items that have them."""

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
