"""Which online store to use. ``type`` selects the backend: ``sqlite`` (default, embedded) or ``redis``.

From the environment (:meth:`StoreConfig.from_env`)::

    HYMIREC_STORE_TYPE      sqlite | redis                     (default sqlite)
    HYMIREC_SQLITE_PATH     SQLite online store file           (default .cache/feast/online.db)
    HYMIREC_REDIS_URL       host:port[,db=N,password=...]      (default 127.0.0.1:6379)
    HYMIREC_FEAST_REGISTRY  Feast registry file                (default next to the SQLite file / .cache/feast)
    HYMIREC_MAX_HISTORY     codes kept per user                (default 1024)
    HYMIREC_RECENT_N        raw recent item ids kept per user  (default 50)

or from a YAML/JSON file with the same keys in lower case without the prefix (``type: redis``,
``redis_url: ...``) via :meth:`StoreConfig.from_file`. Nothing here imports Feast.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .base import OnlineStore

STORE_TYPES = ("sqlite", "redis")


class StoreConfigError(ValueError):
    """The store configuration is invalid (unknown type, bad value)."""


@dataclass(frozen=True)
class StoreConfig:
    type: str = "sqlite"
    sqlite_path: str = ".cache/feast/online.db"
    redis_url: str = "127.0.0.1:6379"
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
        if not self.project.replace("_", "").isalnum():
            raise StoreConfigError(f"project {self.project!r} must be alphanumeric/underscore")
        return self

    @property
    def registry(self) -> str:
        if self.registry_path:
            return self.registry_path
        if self.type == "sqlite":
            return str(Path(self.sqlite_path).with_name(Path(self.sqlite_path).stem + "-registry.db"))
        return ".cache/feast/registry-redis.db"

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
            if key in ("max_history", "recent_n"):
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise StoreConfigError(f"{key} must be an integer, got {value!r}") from None
            kwargs[key] = value if key in ("max_history", "recent_n") else str(value)
        return cls(**kwargs).validate()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "StoreConfig":
        env = os.environ if env is None else env
        names = {"type": "HYMIREC_STORE_TYPE", "sqlite_path": "HYMIREC_SQLITE_PATH",
                 "redis_url": "HYMIREC_REDIS_URL", "registry_path": "HYMIREC_FEAST_REGISTRY",
                 "max_history": "HYMIREC_MAX_HISTORY", "recent_n": "HYMIREC_RECENT_N"}
        data = {k: env[v] for k, v in names.items() if env.get(v)}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "StoreConfig":
        # ${VAR} references (e.g. a Redis password from a Kubernetes Secret) are filled from the environment.
        text = os.path.expandvars(Path(path).read_text())
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise StoreConfigError(f"{path}: expected a mapping")
        return cls.from_mapping(data)


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
