"""Feast online store on SQLite (embedded; the default). One file, no server."""
from __future__ import annotations

from pathlib import Path

from ._feast import FeastOnlineStore
from .config import StoreConfig


class FeastSqliteStore(FeastOnlineStore):
    kind = "sqlite"

    def __init__(self, config: StoreConfig):
        path = Path(config.sqlite_path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(config, {"type": "sqlite", "path": str(path)})
        self.path = path

    def close(self) -> None:
        store = getattr(self._provider, "online_store", None)
        conn = getattr(store, "_conn", None)
        if conn is not None:
            conn.close()
            store._conn = None
