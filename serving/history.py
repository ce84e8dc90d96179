"""Where serving reads a user's history from: a small adapter over the online store (features.store).

    UserHistory(codes [n, L] uint16 oldest first, recent_items raw ids oldest first, codebook_id of the codes)

`StoreHistorySource` reads the real Feast-backed store (`features.store.open_store`); `StaticHistorySource`
serves a fixed mapping (benchmarks, offline `hymirec recommend` over a dataset without a store).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np


class HistoryUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class UserHistory:
    user_id: str
    codes: np.ndarray  # [n, L] codebook codes of the long history, oldest first
    recent_items: tuple[str, ...]  # raw item ids, oldest first
    codebook_id: str = ""  # the codebook that encoded `codes` ("" = not recorded: rows older than versioned codes)


class HistorySource(Protocol):
    name: str

    def start(self) -> None: ...

    def get(self, user_id: str) -> UserHistory | None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class StoreHistorySource:
    """features.store online store (Feast SQLite / Redis). No I/O before start()."""

    name = "feast"

    def __init__(self, config_file: str | None = None, store=None):
        self.config_file = config_file
        self._store = store

    def start(self) -> None:
        if self._store is None:
            from features.store import StoreConfig, open_store

            cfg = StoreConfig.from_file(self.config_file) if self.config_file else StoreConfig.from_env()
            self._store = open_store(cfg, apply=False)

    def get(self, user_id: str) -> UserHistory | None:
        try:
            state = self._store.read_users([user_id]).get(user_id)
        except Exception as exc:  # noqa: BLE001
            raise HistoryUnavailable(f"online store read failed: {exc}") from exc
        if state is None:
            return None
        return UserHistory(user_id, np.asarray(state.codes), tuple(state.recent_items),
                           str(getattr(state, "codebook_id", "") or ""))

    def ping(self) -> bool:
        try:
            self._store.read_users(["__hymirec_ping__"])
            return True
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            finally:
                self._store = None


class StaticHistorySource:
    """A fixed {user_id: (codes, recent_items)} mapping."""

    name = "static"

    def __init__(self, rows: Mapping[str, tuple[np.ndarray, Sequence[str]]]):
        self.rows = dict(rows)

    def start(self) -> None:
        pass

    def get(self, user_id: str) -> UserHistory | None:
        row = self.rows.get(user_id)
        if row is None:
            return None
        return UserHistory(user_id, np.asarray(row[0]), tuple(row[1]))

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass
