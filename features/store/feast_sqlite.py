"""Feast online store on SQLite (embedded; the default). One file, no server.

The per-partition offsets of :meth:`write_users_fenced` live in a table of the same file (``hymirec_fence``), so
the offset check, the offset update and Feast's row upsert are one SQLite transaction (BEGIN IMMEDIATE takes the
write lock first: two processes writing the same file decide one after the other)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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

    def _write_in_transaction(self, what: str, decide: Callable) -> Any:
        """One ``BEGIN IMMEDIATE`` transaction (the write lock: other writers wait): ``decide(conn)`` reads what it
        compares with and returns (refused, rows to write); the rows are written and committed together with
        whatever ``decide`` wrote, or everything is rolled back on an error."""
        view = self._view(USER_VIEW)  # before the lock: a first call may apply the definitions, which takes it
        with self._lock:
            try:
                conn = self._conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    refused, rows = decide(conn)
                    if rows:
                        # Feast's upsert runs in `with conn:`, which commits the open transaction: what decide()
                        # wrote and the rows land together (or, on an error, are rolled back together).
                        self._provider.online_write_batch(self.repo_config, view, self._user_rows(rows), None)
                    else:
                        conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
            except Exception as exc:
                raise self._failure(what, exc)
        return refused

    def write_users_fenced(self, topic: str, parts: Mapping[int, tuple[int, Sequence[UserState]]]) -> set[int]:
        parts = dict(parts)
        if not parts:
            return set()
        project = self.repo_config.project

        def decide(conn):
            conn.execute(_FENCE_DDL)
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
            return refused, rows

        return self._write_in_transaction(
            f"fenced write of {sum(len(s) for _, s in parts.values())} users", decide)

    def write_users_if_unchanged(self, expected: Mapping[str, UserState | None],
                                 new: Sequence[UserState]) -> set[str]:
        """Read the users' rows and write those still equal to ``expected`` in one transaction (the stream
        processor's writes wait for it)."""
        new = self._check_expected(expected, new)
        if not new:
            return set()

        def decide(conn):
            stored = self.read_users([st.user_id for st in new])  # same connection: inside the transaction
            refused = self._unchanged_decision(expected, stored, new)
            return refused, [st for st in new if st.user_id not in refused]

        return self._write_in_transaction(f"compare-and-set write of {len(new)} users", decide)

    def close(self) -> None:
        store = getattr(self._provider, "online_store", None)
        conn = getattr(store, "_conn", None)
        if conn is not None:
            conn.close()
            store._conn = None
