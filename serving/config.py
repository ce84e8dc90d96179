"""Typed configuration of the serving adapter (`hymirec serve`).

Environment variables (all optional):

    HYMIREC_ARTIFACT_DIR   run directory (core.artifacts.RunLayout)        default runs/latest
    HYMIREC_TRITON_URL     Triton gRPC host:port; "" or "off" disables Triton   default 127.0.0.1:8001
    HYMIREC_MILVUS_URI     Milvus Lite path or server URI                      default <artifact_dir>/milvus.db
    HYMIREC_FEAST_REPO     online-store config file (YAML/JSON, features.store.StoreConfig.from_file);
                           unset: features.store.StoreConfig.from_env()  (HYMIREC_STORE_TYPE, ...)
    HYMIREC_HOST / HYMIREC_PORT                                                 default 127.0.0.1 / 8080
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping


class ServingConfigError(ValueError):
    pass


MERGES = ("max", "quota")


@dataclass(frozen=True)
class ServingConfig:
    artifact_dir: Path = Path("runs/latest")
    triton_url: str | None = "127.0.0.1:8001"
    triton_model: str = "llm"
    triton_timeout_s: float = 1.0
    milvus_uri: str | None = None  # None → <artifact_dir>/milvus.db
    milvus_alias: str = "hymirec_items"
    milvus_timeout_s: float = 2.0
    feast_repo: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    default_k: int = 10
    max_k: int = 1000
    quotas: tuple[int, ...] | None = None  # optional per-interest minimum slots (diversity)
    merge: str = "max"  # "max": one list by max-over-interests score; "quota": every interest is guaranteed
    #   k // K of the k slots (the window evaluation's quota merge, which lets K interests show; HYMIREC_MERGE)
    candidates_per_interest: int = 0  # 0 → k + #seen + 10 per interest
    breaker_cooldown_s: float = 1.0  # after a failure, skip the failing service for this long
    ort_threads: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def milvus(self) -> str:
        return self.milvus_uri or str(Path(self.artifact_dir) / "milvus.db")

    def with_(self, **changes) -> "ServingConfig":
        return replace(self, **changes)

    def validate(self) -> "ServingConfig":
        if not (0 < self.port < 65536):
            raise ServingConfigError(f"port must be 1..65535, got {self.port}")
        if not (1 <= self.default_k <= self.max_k):
            raise ServingConfigError("need 1 <= default_k <= max_k")
        if self.triton_timeout_s <= 0 or self.milvus_timeout_s <= 0:
            raise ServingConfigError("timeouts must be > 0")
        if self.merge not in MERGES:
            raise ServingConfigError(f"merge must be one of {MERGES}, got {self.merge!r}")
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ServingConfig":
        env = os.environ if env is None else env
        kw: dict = {}
        if env.get("HYMIREC_ARTIFACT_DIR"):
            kw["artifact_dir"] = Path(env["HYMIREC_ARTIFACT_DIR"])
        if "HYMIREC_TRITON_URL" in env:
            url = env["HYMIREC_TRITON_URL"].strip()
            kw["triton_url"] = None if url.lower() in ("", "off", "none") else url.removeprefix("grpc://")
        if env.get("HYMIREC_MILVUS_URI"):
            kw["milvus_uri"] = env["HYMIREC_MILVUS_URI"]
        if env.get("HYMIREC_FEAST_REPO"):
            kw["feast_repo"] = env["HYMIREC_FEAST_REPO"]
        if env.get("HYMIREC_MERGE"):
            kw["merge"] = env["HYMIREC_MERGE"].strip().lower()
        if env.get("HYMIREC_HOST"):
            kw["host"] = env["HYMIREC_HOST"]
        if env.get("HYMIREC_PORT"):
            try:
                kw["port"] = int(env["HYMIREC_PORT"])
            except ValueError:
                raise ServingConfigError(f"HYMIREC_PORT must be an integer, got {env['HYMIREC_PORT']!r}") from None
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if "artifact_dir" in kw:
            kw["artifact_dir"] = Path(kw["artifact_dir"])
        return cls(**kw).validate()
