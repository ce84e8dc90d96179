"""Typed configuration of the serving adapter (`hymirec serve`).

Environment variables (all optional):

    HYMIREC_ARTIFACT_DIR   run directory (core.artifacts.RunLayout)        default runs/latest
    HYMIREC_RELEASE_ROOT   artifact root with registry.json (core/releases.py): serve its current release and
                           follow the registry to the next one without a restart    default none
    HYMIREC_RELEASE_POLL_S how often the registry is checked                   default 1
    HYMIREC_TRITON_URL     Triton gRPC host:port; "" or "off" disables Triton   default 127.0.0.1:8001
    HYMIREC_MILVUS_URI     Milvus Lite path or server URI                      default <artifact_dir>/milvus.db
    HYMIREC_MILVUS_TOKEN   Milvus token (user:password or API key), passed to MilvusClient   default none
    HYMIREC_MILVUS_EF      HNSW search breadth (raised to the candidate count when that is larger)  default 128
    HYMIREC_MILVUS_CONSISTENCY  Bounded | Session | Eventually | Strong (Strong waits for a time tick:
                           200-400 ms per search on a Milvus server; releases swap collections and
                           new items may show seconds late, so serving never needs it)   default Bounded
    HYMIREC_FEAST_REPO     online-store config file (YAML/JSON, features.store.StoreConfig.from_file);
                           unset: features.store.StoreConfig.from_env()  (HYMIREC_STORE_TYPE, ...)
    HYMIREC_HOST / HYMIREC_PORT                                                 default 127.0.0.1 / 8080

Request guard (serving/guard.py):

    HYMIREC_AUTH           auto | required | off                                default auto
                           auto: keys configured → required; no keys → off on a loopback host (`make demo`,
                           `hymirec serve` on 127.0.0.1), refusal to start on any other host
    HYMIREC_API_KEYS_FILE  file (one key per line) or directory (a mounted Secret: every file in it)
    HYMIREC_API_KEYS       comma-separated keys (prefer the file: env values show up in process listings)
    HYMIREC_MAX_BODY_BYTES larger bodies get a 413                              default 65536
    HYMIREC_RATE_LIMIT_RPS requests/s per key (per client address without auth); 0 = no limit   default 0
    HYMIREC_RATE_LIMIT_BURST  bucket size of that limit                        default 20
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping


class ServingConfigError(ValueError):
    pass


MERGES = ("max", "quota")
AUTH_MODES = ("auto", "required", "off")
CONSISTENCY_LEVELS = ("Bounded", "Session", "Eventually", "Strong")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServingConfig:
    artifact_dir: Path = Path("runs/latest")
    release_root: Path | None = None  # registry to follow (serving/served_release.py); None: artifact_dir only
    release_poll_s: float = 1.0  # below orchestration.releases' settle time (3 s), so no request loses its version
    triton_url: str | None = "127.0.0.1:8001"
    triton_model: str = "llm"
    triton_timeout_s: float = 1.0
    milvus_uri: str | None = None  # None → <artifact_dir>/milvus.db
    milvus_alias: str = "hymirec_items"
    milvus_token: str = field(default="", repr=False)  # a credential: kept out of logged configs
    milvus_timeout_s: float = 2.0
    # HNSW ef: recall@60 0.986 on 100k items and 0.999 on a trained ML-1M run at 128 (0.939 / 0.989 at 64), for
    # ~0.1 ms more per search (bench/serving.py, bench/ann_recall.py)
    milvus_ef: int = 128
    milvus_consistency: str = "Bounded"
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
    auth: str = "auto"  # see the module docstring; resolved against the keys and the host by auth_enabled()
    api_keys_file: str | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_keys_reload_s: float = 5.0  # how often the key file is checked for a rotation
    max_body_bytes: int = 65536  # a recommend request is ~100 bytes; 64 KiB leaves room without inviting abuse
    rate_limit_rps: float = 0.0
    rate_limit_burst: int = 20
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
        if self.release_poll_s <= 0:
            raise ServingConfigError(f"release_poll_s must be > 0, got {self.release_poll_s} (HYMIREC_RELEASE_POLL_S)")
        if self.triton_timeout_s <= 0 or self.milvus_timeout_s <= 0:
            raise ServingConfigError("timeouts must be > 0")
        if self.milvus_consistency not in CONSISTENCY_LEVELS:
            raise ServingConfigError(f"milvus_consistency must be one of {CONSISTENCY_LEVELS}, got "
                                     f"{self.milvus_consistency!r} (HYMIREC_MILVUS_CONSISTENCY)")
        if self.milvus_ef < 1:
            raise ServingConfigError(f"milvus_ef must be >= 1, got {self.milvus_ef} (HYMIREC_MILVUS_EF)")
        if self.merge not in MERGES:
            raise ServingConfigError(f"merge must be one of {MERGES}, got {self.merge!r}")
        if self.auth not in AUTH_MODES:
            raise ServingConfigError(f"auth must be one of {AUTH_MODES}, got {self.auth!r} (HYMIREC_AUTH)")
        if self.max_body_bytes < 1:
            raise ServingConfigError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.rate_limit_rps < 0 or self.rate_limit_burst < 1:
            raise ServingConfigError(f"need rate_limit_rps >= 0 and rate_limit_burst >= 1, got "
                                     f"{self.rate_limit_rps} and {self.rate_limit_burst}")
        return self

    @property
    def keys_configured(self) -> bool:
        return bool(self.api_keys_file or self.api_keys)

    def auth_enabled(self) -> bool:
        """Whether requests need a key; raises when keys are required but none are configured."""
        if self.auth == "off":
            return False
        if self.keys_configured:
            return True
        if self.auth == "auto" and self.host in LOOPBACK_HOSTS:
            return False
        raise ServingConfigError(
            f"no API keys configured but authentication is {'required' if self.auth == 'required' else 'needed'} "
            f"(host {self.host}): set HYMIREC_API_KEYS_FILE (a file or mounted Secret, one key per line) or "
            "HYMIREC_API_KEYS, or HYMIREC_AUTH=off to serve without authentication")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ServingConfig":
        env = os.environ if env is None else env
        kw: dict = {}
        if env.get("HYMIREC_ARTIFACT_DIR"):
            kw["artifact_dir"] = Path(env["HYMIREC_ARTIFACT_DIR"])
        if env.get("HYMIREC_RELEASE_ROOT"):
            kw["release_root"] = Path(env["HYMIREC_RELEASE_ROOT"])
        if env.get("HYMIREC_RELEASE_POLL_S"):
            kw["release_poll_s"] = _number(env, "HYMIREC_RELEASE_POLL_S", float)
        if "HYMIREC_TRITON_URL" in env:
            url = env["HYMIREC_TRITON_URL"].strip()
            kw["triton_url"] = None if url.lower() in ("", "off", "none") else url.removeprefix("grpc://")
        if env.get("HYMIREC_MILVUS_URI"):
            kw["milvus_uri"] = env["HYMIREC_MILVUS_URI"]
        if env.get("HYMIREC_MILVUS_TOKEN"):
            kw["milvus_token"] = env["HYMIREC_MILVUS_TOKEN"].strip()
        if env.get("HYMIREC_MILVUS_CONSISTENCY"):
            kw["milvus_consistency"] = env["HYMIREC_MILVUS_CONSISTENCY"].strip().capitalize()
        if env.get("HYMIREC_MILVUS_EF"):
            kw["milvus_ef"] = _number(env, "HYMIREC_MILVUS_EF", int)
        if env.get("HYMIREC_FEAST_REPO"):
            kw["feast_repo"] = env["HYMIREC_FEAST_REPO"]
        if env.get("HYMIREC_MERGE"):
            kw["merge"] = env["HYMIREC_MERGE"].strip().lower()
        if env.get("HYMIREC_HOST"):
            kw["host"] = env["HYMIREC_HOST"]
        if env.get("HYMIREC_PORT"):
            kw["port"] = _number(env, "HYMIREC_PORT", int)
        if env.get("HYMIREC_AUTH"):
            kw["auth"] = env["HYMIREC_AUTH"].strip().lower()
        if env.get("HYMIREC_API_KEYS_FILE"):
            kw["api_keys_file"] = env["HYMIREC_API_KEYS_FILE"]
        if env.get("HYMIREC_API_KEYS"):
            kw["api_keys"] = tuple(k.strip() for k in env["HYMIREC_API_KEYS"].split(",") if k.strip())
        for name, key, kind in (("HYMIREC_MAX_BODY_BYTES", "max_body_bytes", int),
                                ("HYMIREC_RATE_LIMIT_RPS", "rate_limit_rps", float),
                                ("HYMIREC_RATE_LIMIT_BURST", "rate_limit_burst", int)):
            if env.get(name):
                kw[key] = _number(env, name, kind)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if "artifact_dir" in kw:
            kw["artifact_dir"] = Path(kw["artifact_dir"])
        if kw.get("release_root") is not None:
            kw["release_root"] = Path(kw["release_root"])
        return cls(**kw).validate()


def _number(env: Mapping[str, str], name: str, kind: type):
    try:
        return kind(env[name])
    except ValueError:
        raise ServingConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                                 f"got {env[name]!r}") from None
