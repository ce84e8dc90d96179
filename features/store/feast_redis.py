"""Feast online store on Redis (production). ``skip_dedup``: ordering and idempotence are handled by the
processor (per-user applied offsets), so Feast's per-key timestamp check is not needed: it would cost a round
trip per batch and would drop a second write of a user within the same timestamp."""
from __future__ import annotations

from ._feast import FeastOnlineStore
from .base import StoreError
from .config import StoreConfig


class FeastRedisStore(FeastOnlineStore):
    kind = "redis"

    def __init__(self, config: StoreConfig):
        super().__init__(config, {"type": "redis", "connection_string": config.redis_url, "skip_dedup": True})

    def ping(self) -> None:
        try:
            self._client().ping()
        except Exception as exc:
            raise StoreError(f"redis at {self.config.redis_url} not reachable: {exc}") from exc

    def _client(self):
        store = self._provider.online_store
        return store._get_client(self.repo_config.online_store)

    def close(self) -> None:
        store = getattr(self._provider, "online_store", None)
        client = getattr(store, "_client", None)
        if client is not None:
            try:
                client.close()
            finally:
                store._client = None
