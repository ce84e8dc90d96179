"""Feast online store on Redis (production). ``skip_dedup``: ordering and idempotence are handled by the
processor (per-user applied offsets), so Feast's per-key timestamp check is not needed: it would cost a round
trip per batch and would drop a second write of a user within the same timestamp.

Every Redis call has a socket timeout and a connect timeout (StoreConfig.redis_socket_timeout_s /
redis_connect_timeout_s) unless the connection string sets its own, and at most StoreConfig.redis_retries retries
with a short backoff: redis-py's default (3 retries, backoff up to 10 s) turns a hung Redis into ~20 s calls, so
the client is built here with that policy and handed to Feast. A call then fails within about
(retries + 1) × socket timeout + backoff. Error messages show the URL with the password replaced by ***."""
from __future__ import annotations

from ._feast import FeastOnlineStore
from .base import StoreError
from .config import StoreConfig


def connection_string(config: StoreConfig) -> str:
    """Feast's "host:port,key=value" string with the timeouts added (Feast hands the keys to redis.Redis)."""
    url = config.redis_url
    for key, value in (("socket_timeout", config.redis_socket_timeout_s),
                       ("socket_connect_timeout", config.redis_connect_timeout_s)):
        if f"{key}=" not in url:
            url += f",{key}={value:g}"
    return url


class FeastRedisStore(FeastOnlineStore):
    kind = "redis"

    def __init__(self, config: StoreConfig):
        try:
            super().__init__(config, {"type": "redis", "connection_string": connection_string(config),
                                      "skip_dedup": True})
        except Exception as exc:  # Feast's config validation quotes its input, the password included
            raise StoreError(f"redis store at {config.redacted_url()} cannot be configured: "
                             f"{config.scrub(f'{type(exc).__name__}: {exc}')}") from None
        self._install_client()

    def _install_client(self) -> None:
        """A redis.Redis with the configured retry policy, where Feast would otherwise build its own (no I/O:
        redis-py connects on the first command)."""
        from redis import Redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        store = self._provider.online_store
        nodes, kwargs = store._parse_connection_string(self.repo_config.online_store.connection_string)
        kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), self.config.redis_retries))
        store._client = Redis(host=nodes[0]["host"], port=nodes[0]["port"], **kwargs)

    @property
    def where(self) -> str:
        return f"redis at {self.config.redacted_url()}"

    def ping(self) -> None:
        try:
            self._client().ping()
        except Exception as exc:
            raise StoreError(f"{self.where} not reachable: "
                             f"{self.config.scrub(f'{type(exc).__name__}: {exc}')}") from None

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
