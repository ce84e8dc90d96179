"""Feast online store on Redis (production). ``skip_dedup``: ordering and idempotence are handled by the
processor (per-user applied offsets), so Feast's per-key timestamp check is not needed: it would cost a round
trip per batch and would drop a second write of a user within the same timestamp.

Every Redis call has a socket timeout and a connect timeout (StoreConfig.redis_socket_timeout_s /
redis_connect_timeout_s) unless the connection string sets its own, and at most StoreConfig.redis_retries retries
with a short backoff: redis-py's default (3 retries, backoff up to 10 s) turns a hung Redis into ~20 s calls, so
the client is built here with that policy and handed to Feast. A call then fails within about
(retries + 1) × socket timeout + backoff. Error messages show the URL with the password replaced by ***."""
from __future__ import annotations

from typing import Mapping, Sequence

from ._feast import USER_VIEW, FeastOnlineStore
from .base import StoreError, UserState
from .config import StoreConfig

_WATCH_RETRIES = 20  # WATCH conflicts need a concurrent writer of the same partition: a handful at most
_CAS_BATCH_ATTEMPTS = 3  # write_users_if_unchanged: whole-batch attempts before falling back to one user at a time


def connection_string(config: StoreConfig) -> str:
    """Feast's "host:port,key=value" string with the timeouts and TLS settings added (Feast hands the keys to
    redis.Redis). TLS verifies the server's certificate against redis_ca_file (else the system's CAs) and its host
    name, so a man in the middle with any other certificate is refused."""
    url = config.redis_url
    if url.startswith("rediss://"):  # Feast's format has no scheme: rediss:// is our spelling of ssl=true
        url = url[len("rediss://"):]
    if config.tls:
        tls = {"ssl": "true", "ssl_cert_reqs": "required", "ssl_check_hostname": "true"}
        if config.redis_ca_file:
            tls["ssl_ca_certs"] = config.redis_ca_file
        url += "".join(f",{k}={v}" for k, v in tls.items() if f"{k}=" not in url)
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

    # ---- compare-and-set on the per-partition offset ---------------------------------------------------------
    def _fence_key(self, topic: str, partition: int) -> str:
        return f"hymirec:fence:{self.repo_config.project}:{topic}:{int(partition)}"

    def read_fence(self, topic: str) -> dict[int, int]:
        client = self._client()
        prefix = self._fence_key(topic, 0)[:-1]
        try:
            keys = sorted(client.scan_iter(match=prefix + "*", count=1000))
            values = client.mget(keys) if keys else []
        except Exception as exc:
            raise self._failure("read of the partition offsets", exc)
        return {int(k.decode()[len(prefix):]): int(v) for k, v in zip(keys, values) if v is not None}

    def write_users_fenced(self, topic: str, parts: Mapping[int, tuple[int, Sequence[UserState]]]) -> set[int]:
        """WATCH the partitions' offset keys, read them, then MULTI: the rows of the accepted partitions (the same
        HSETs as Feast's skip_dedup write path, so Feast reads them back) and their new offsets; EXEC fails if
        another writer changed an offset in between, and the decision is taken again on the new values."""
        from redis import WatchError
        parts = dict(parts)
        if not parts:
            return set()
        keys = {p: self._fence_key(topic, p) for p in parts}
        hsets = {p: self._hsets(states) for p, (_, states) in parts.items()}
        try:
            client = self._client()
            for _ in range(_WATCH_RETRIES):
                with client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(*keys.values())
                        values = pipe.mget(list(keys.values()))
                        stored = {p: int(v) for p, v in zip(keys, values) if v is not None}
                        refused = self._fence_decision(parts, stored)
                        pipe.multi()
                        for p, (offset, _) in parts.items():
                            if p in refused:
                                continue
                            for key, mapping in hsets[p]:
                                pipe.hset(key, mapping=mapping)
                            pipe.set(keys[p], int(offset))
                        pipe.execute()
                        return refused
                    except WatchError:
                        continue
        except Exception as exc:
            raise self._failure(f"fenced write of {sum(len(s) for _, s in parts.values())} users", exc)
        raise StoreError(f"{self.where}: fenced write of topic {topic!r} kept conflicting with another writer "
                         f"({_WATCH_RETRIES} attempts)")

    def write_users_if_unchanged(self, expected: Mapping[str, UserState | None],
                                 new: Sequence[UserState]) -> set[str]:
        """WATCH the users' row keys, read the rows, MULTI: the HSETs of the rows still equal to ``expected``; EXEC
        fails if any watched row changed meanwhile, and the batch is decided again. A batch that keeps conflicting
        (a live processor writing some of its users) is done user by user, once each: a user whose row changes
        between its read and its EXEC is refused, which is what a changed row means anyway."""
        from redis import WatchError
        new = self._check_expected(expected, new)
        if not new:
            return set()
        hsets = dict(zip((st.user_id for st in new), self._hsets(new)))  # user -> (redis key, fields)
        try:
            client = self._client()
            for _ in range(_CAS_BATCH_ATTEMPTS):
                try:
                    return self._cas(client, expected, new, hsets)
                except WatchError:
                    continue
            refused = set()
            for st in new:
                try:
                    refused |= self._cas(client, expected, [st], hsets)
                except WatchError:
                    refused.add(st.user_id)
            return refused
        except Exception as exc:
            raise self._failure(f"compare-and-set write of {len(new)} users", exc)

    def _cas(self, client, expected: Mapping[str, UserState | None], new: list[UserState],
             hsets: dict[str, tuple[bytes, dict]]) -> set[str]:
        """One WATCH/MULTI/EXEC over ``new``'s users; raises WatchError when a watched row changed."""
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(*(hsets[st.user_id][0] for st in new))
            stored = self.read_users([st.user_id for st in new])  # read after WATCH: a later change fails EXEC
            refused = self._unchanged_decision(expected, stored, new)
            pipe.multi()
            for st in new:
                if st.user_id not in refused:
                    key, mapping = hsets[st.user_id]
                    pipe.hset(key, mapping=mapping)
            pipe.execute()
            return refused

    def _hsets(self, states: Sequence[UserState]) -> list[tuple[bytes, dict]]:
        """(redis key, hash fields) per row, built exactly as feast.infra.online_stores.redis writes them."""
        from feast import utils
        from feast.infra.online_stores.redis import _mmh3, _redis_key, _versioned_fv_name
        from google.protobuf.timestamp_pb2 import Timestamp
        view_name = _versioned_fv_name(self._view(USER_VIEW), self.repo_config)
        out = []
        for entity_key, values, event_ts, _ in self._user_rows(states):
            ts = Timestamp()
            ts.FromDatetime(utils.make_tzaware(event_ts))
            fields = {f"_ts:{view_name}": ts.SerializeToString()}
            for name, val in values.items():
                fields[_mmh3(f"{view_name}:{name}")] = val.SerializeToString()
            out.append((_redis_key(self.repo_config.project, entity_key,
                                   entity_key_serialization_version=self.repo_config.entity_key_serialization_version),
                        fields))
        return out

    @property
    def where(self) -> str:
        return f"redis at {self.config.redacted_url()}" + (" (TLS)" if self.config.tls else "")

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
