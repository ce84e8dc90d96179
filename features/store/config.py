"""Which online store to use. ``type`` selects the backend: ``sqlite`` (default, embedded) or ``redis``.

From the environment (:meth:`StoreConfig.from_env`)::

    HYMIREC_STORE_TYPE      sqlite | redis                     (default sqlite)
    HYMIREC_SQLITE_PATH     SQLite online store file           (default .cache/feast/online.db)
    HYMIREC_REDIS_URL       host:port[,db=N,password=...]      (default 127.0.0.1:6379)
    HYMIREC_REDIS_SOCKET_TIMEOUT / HYMIREC_REDIS_CONNECT_TIMEOUT  seconds per Redis call / connect (default 2 / 2)
    HYMIREC_REDIS_RETRIES   retries of a failed Redis call, short backoff (default 1)
    HYMIREC_REDIS_TLS       true: TLS to Redis, server certificate and host name verified (a rediss:// URL too)
    HYMIREC_REDIS_CA_FILE   CA certificate (PEM) that signed the Redis server's (default: the system's CAs)
    HYMIREC_FEAST_REGISTRY  Feast registry file                (default next to the SQLite file / .cache/feast)
    HYMIREC_MAX_HISTORY     codes kept per user                (default 1024)
    HYMIREC_RECENT_N        raw recent item ids kept per user  (default 50)

or from a YAML/JSON file with the same keys in lower case without the prefix (``type: redis``,
``redis_url: ...``) via :meth:`StoreConfig.from_file`. Nothing here imports Feast.

The Redis password (``password=`` in the Feast connection string, or ``redis://user:pass@host``) is never shown:
``repr``, :meth:`StoreConfig.redacted_url` and :meth:`StoreConfig.scrub` (used on every store error) replace it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .base import OnlineStore

STORE_TYPES = ("sqlite", "redis")
_FLOATS = ("redis_socket_timeout_s", "redis_connect_timeout_s")
_INTS = ("max_history", "recent_n", "redis_retries")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}
_TLS_SCHEME = "rediss://"
# password=VALUE in Feast's "host:port,key=value,..." form (a value runs to the next comma), and user:pass@ in URLs.
_PASSWORD_PARAM = re.compile(r"(?i)(password=)([^,]*)")
_URL_PASSWORD = re.compile(r"(://[^:/@,]*:)([^@/,]*)(@)")


def redis_secrets(url: str) -> list[str]:
    """The password values in a Redis connection string (empty ones left out)."""
    found = [m.group(2) for m in _PASSWORD_PARAM.finditer(url)] + [m.group(2) for m in _URL_PASSWORD.finditer(url)]
    return [s for s in found if s]


def redact_redis_url(url: str) -> str:
    return _URL_PASSWORD.sub(r"\1***\3", _PASSWORD_PARAM.sub(r"\1***", url))


class StoreConfigError(ValueError):
    """The store configuration is invalid (unknown type, bad value)."""


@dataclass(frozen=True, repr=False)
class StoreConfig:
    type: str = "sqlite"
    sqlite_path: str = ".cache/feast/online.db"
    redis_url: str = "127.0.0.1:6379"
    # A hung Redis must fail the call (the processor retries, serving degrades) instead of blocking the loop.
    redis_socket_timeout_s: float = 2.0
    redis_connect_timeout_s: float = 2.0
    redis_retries: int = 1  # retries of a failed call (redis-py's default of 3 with long backoff blocks for ~20 s)
    redis_tls: bool = False
    redis_ca_file: str | None = None
    registry_path: str | None = None
    project: str = "hymirec"
    max_history: int = 1024
    recent_n: int = 50

    def validate(self) -> "StoreConfig":
        if self.type not in STORE_TYPES:
            raise StoreConfigError(
                f"unknown store type {self.type!r}: expected one of {', '.join(STORE_TYPES)}")
        if self.max_history < 1 or self.recent_n < 1:
            raise StoreConfigError("max_history and recent_n must be >= 1")
        if self.type == "redis" and not self.redis_url:
            raise StoreConfigError("redis store needs redis_url (HYMIREC_REDIS_URL=host:port)")
        if self.redis_socket_timeout_s <= 0 or self.redis_connect_timeout_s <= 0 or self.redis_retries < 0:
            raise StoreConfigError("redis_socket_timeout_s and redis_connect_timeout_s must be > 0 (seconds), "
                                   "redis_retries >= 0")
        self._validate_tls()
        if not self.project.replace("_", "").isalnum():
            raise StoreConfigError(f"project {self.project!r} must be alphanumeric/underscore")
        return self

    @property
    def tls(self) -> bool:
        # ssl=true written in Feast's connection string (the chart's externalRedis.ssl) counts as well.
        return (self.redis_tls or self.redis_url.startswith(_TLS_SCHEME)
                or re.search(r"(?i),ssl=true(,|$)", self.redis_url) is not None)

    def _validate_tls(self) -> None:
        if self.redis_url.startswith(_TLS_SCHEME) and "@" in self.redis_url:
            raise StoreConfigError("redis_url: write rediss://host:port,password=... (credentials before '@' are "
                                   "not read)")
        if self.redis_ca_file is None:
            return
        if not self.tls:
            raise StoreConfigError("redis_ca_file is set but TLS is off: set redis_tls (HYMIREC_REDIS_TLS=true) "
                                   "or use a rediss:// URL")
        if "," in self.redis_ca_file:  # Feast's connection string is split on commas
            raise StoreConfigError(f"redis_ca_file {self.redis_ca_file!r}: the path may not contain a comma")
        if not Path(self.redis_ca_file).is_file():
            raise StoreConfigError(f"Redis CA file {self.redis_ca_file} does not exist")

    @property
    def registry(self) -> str:
        if self.registry_path:
            return self.registry_path
        if self.type == "sqlite":
            return str(Path(self.sqlite_path).with_name(Path(self.sqlite_path).stem + "-registry.db"))
        return ".cache/feast/registry-redis.db"

    def redacted_url(self) -> str:
        return redact_redis_url(self.redis_url)

    def scrub(self, text: str) -> str:
        """`text` with every secret of this configuration replaced (for error messages and logs)."""
        for secret in sorted(redis_secrets(self.redis_url), key=len, reverse=True):
            text = text.replace(secret, "***")
        return redact_redis_url(text)

    def __repr__(self) -> str:
        shown = {**asdict(self), "redis_url": self.redacted_url()}
        return "StoreConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def with_(self, **changes: Any) -> "StoreConfig":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "StoreConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise StoreConfigError(f"unknown store config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue
            if key == "redis_tls":
                if isinstance(value, str) and value.strip().lower() not in _BOOLS:
                    raise StoreConfigError(f"redis_tls must be true or false, got {value!r}")
                kwargs[key] = _BOOLS[value.strip().lower()] if isinstance(value, str) else bool(value)
                continue
            if key in _INTS or key in _FLOATS:
                kind = int if key in _INTS else float
                try:
                    value = kind(value)
                except (TypeError, ValueError):
                    raise StoreConfigError(f"{key} must be {'an integer' if kind is int else 'a number'}, "
                                           f"got {value!r}") from None
            kwargs[key] = value if key in _INTS or key in _FLOATS else str(value)
        return cls(**kwargs).validate()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "StoreConfig":
        env = os.environ if env is None else env
        names = {"type": "HYMIREC_STORE_TYPE", "sqlite_path": "HYMIREC_SQLITE_PATH",
                 "redis_url": "HYMIREC_REDIS_URL", "registry_path": "HYMIREC_FEAST_REGISTRY",
                 "max_history": "HYMIREC_MAX_HISTORY", "recent_n": "HYMIREC_RECENT_N",
                 "redis_socket_timeout_s": "HYMIREC_REDIS_SOCKET_TIMEOUT",
                 "redis_connect_timeout_s": "HYMIREC_REDIS_CONNECT_TIMEOUT", "redis_retries": "HYMIREC_REDIS_RETRIES",
                 "redis_tls": "HYMIREC_REDIS_TLS", "redis_ca_file": "HYMIREC_REDIS_CA_FILE"}
        data = {k: env[v] for k, v in names.items() if env.get(v)}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "StoreConfig":
        # ${VAR} references (e.g. a Redis password from a Kubernetes Secret) are filled from the environment
        # after parsing, so a parse error quotes the file as written, never the expanded secret.
        text = Path(path).read_text()
        import yaml
        try:
            data = json.loads(text) if str(path).endswith(".json") else (yaml.safe_load(text) or {})
        except (ValueError, yaml.YAMLError) as exc:
            raise StoreConfigError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}: "
                                   f"{exc}") from None
        if not isinstance(data, dict):
            raise StoreConfigError(f"{path}: expected a mapping")
        return cls.from_mapping({k: os.path.expandvars(v) if isinstance(v, str) else v for k, v in data.items()})


def open_store(config: StoreConfig | None = None, apply: bool = True) -> OnlineStore:
    """Open the configured backend (imports Feast lazily); ``apply`` registers the definitions first."""
    config = (config or StoreConfig.from_env()).validate()
    if config.type == "sqlite":
        from .feast_sqlite import FeastSqliteStore as cls
    else:
        from .feast_redis import FeastRedisStore as cls
    store = cls(config)
    if apply:
        store.apply()
    return store
