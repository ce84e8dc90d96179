"""Feast online store on SQLite (embedded; the default). One file, no server.

The per-partition offsets of :meth:`write_users_fenced` live in a table of the same file (``hymirec_fence``), so
the offset check, the offset update and Feast's row upsert are one SQLite transaction (BEGIN IMMEDIATE takes the
write lock first: two processes writing the same file decide one after the other)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ._feast import USER_VIEW, FeastOnlineStore
from .base import UserState
from .config import StoreConfig

_FENCE_DDL = ("CREATE TABLE IF NOT EXISTS hymirec_fence (project TEXT NOT NULL, topic TEXT NOT NULL, "
              "partition INTEGER NOT NULL, last_offset INTEGER NOT NULL, PRIMARY KEY (project, topic, partition))")


class FeastSqliteStore(FeastOnlineStore):
    kind = "sqlite"

    def __init__(self, config: StoreConfig):
        path = Path(config.sqlite_path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(config, {"type": "sqlite", "path": str(path)})
        self.path = path

    def _conn(self):
        return self._provider.online_store._get_conn(self.repo_config)

    def read_fence(self, topic: str) -> dict[int, int]:
        try:
            conn = self._conn()
            conn.execute(_FENCE_DDL)
            rows = conn.execute("SELECT partition, last_offset FROM hymirec_fence WHERE project = ? AND topic = ?",
                                (self.repo_config.project, topic)).fetchall()
        except Exception as exc:
            raise self._failure("read of the partition offsets", exc)
        return {int(p): int(o) for p, o in rows}

    def write_users_fenced(self, topic: str, parts: Mapping[int, tuple[int, Sequence[UserState]]]) -> set[int]:
        parts = dict(parts)
        if not parts:
            return set()
        project = self.repo_config.project
        view = self._view(USER_VIEW)  # before the lock: a first call may apply the definitions, which takes it
        with self._lock:
            try:
                conn = self._conn()
                conn.execute(_FENCE_DDL)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    stored = dict(conn.execute(
                        "SELECT partition, last_offset FROM hymirec_fence WHERE project = ? AND topic = ?",
                        (project, topic)).fetchall())
                    refused = self._fence_decision(parts, stored)
                    rows: list[UserState] = []
                    for p, (offset, states) in parts.items():
                        if p in refused:
                            continue
                        conn.execute("INSERT INTO hymirec_fence VALUES (?, ?, ?, ?) ON CONFLICT (project, topic, "
                                     "partition) DO UPDATE SET last_offset = excluded.last_offset",
                                     (project, topic, int(p), int(offset)))
                        rows.extend(states)
                    if rows:
                        # Feast's upsert runs in `with conn:`, which commits the open transaction: the offsets
                        # above and the rows land together (or, on an error, are rolled back together).
                        self._provider.online_write_batch(self.repo_config, view, self._user_rows(rows), None)
                    else:
                        conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
            except Exception as exc:
                raise self._failure(f"fenced write of {sum(len(s) for _, s in parts.values())} users", exc)
        return refused

    def write_users_if_unchanged(self, expected: Mapping[str, UserState | None],
                                 new: Sequence[UserState]) -> set[str]:
        """BEGIN IMMEDIATE (the write lock: the stream processor's writes wait), read the users' rows, write those
        still equal to ``expected``, commit: the comparison and the write are one transaction."""
        new = self._check_expected(expected, new)
        if not new:
            return set()
        view = self._view(USER_VIEW)
        with self._lock:
            try:
                conn = self._conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    stored = self.read_users([st.user_id for st in new])  # same connection: inside the transaction
                    refused = self._unchanged_decision(expected, stored, new)
                    rows = [st for st in new if st.user_id not in refused]
                    if rows:  # Feast's upsert runs in `with conn:`, which commits the open transaction
                        self._provider.online_write_batch(self.repo_config, view, self._user_rows(rows), None)
                    else:
                        conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
            except Exception as exc:
                raise self._failure(f"compare-and-set write of {len(new)} users", exc)
        return refused

    def close(self) -> None:
        store = getattr(self._provider, "online_store", None)
        conn = getattr(store, "_conn", None)
        if conn is not None:
            conn.close()
            store._conn = None
