"""Shared Feast plumbing of the two backends: RepoConfig from StoreConfig, apply, proto (de)serialisation.

Reads and writes go through the provider's ``online_read`` / ``online_write_batch`` (the online store API that
``FeatureStore.write_to_online_store`` / ``get_online_features`` call underneath) with protos built here:
no pandas round trip on the processor's hot path. Rows written this way are read back unchanged by
``FeatureStore.get_online_features`` (checked by the conformance suite).
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .base import OnlineStore, StoreError, UserState, pack_codes, unpack_codes
from .config import StoreConfig

REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"
USER_VIEW = "user_history"
ITEM_VIEW = "item_codes"
_USER_FEATURES = ["history_codes", "code_layers", "history_len", "recent_item_ids", "recent_event_times_ms",
                  "applied_partitions", "applied_offsets", "last_event_time_ms", "n_applied", "codebook_id"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ts_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(max(ms, 0) / 1000.0, tz=timezone.utc)


class FeastOnlineStore(OnlineStore):
    kind = "feast"

    def __init__(self, config: StoreConfig, online_store: dict[str, Any]):
        from feast import FeatureStore, RepoConfig
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Int64List, StringList, Value
        self.config = config.validate()
        Path(self.config.registry).parent.mkdir(parents=True, exist_ok=True)
        self.repo_config = RepoConfig(
            project=config.project, provider="local",
            registry={"registry_type": "file", "path": str(Path(self.config.registry).resolve()),
                      "cache_ttl_seconds": 0},
            online_store=online_store, offline_store={"type": "file"},
            entity_key_serialization_version=3, repo_path=str(REPO_DIR))
        self.fs = FeatureStore(config=self.repo_config)
        self._EntityKey, self._Value, self._Int64List, self._StringList = EntityKey, Value, Int64List, StringList
        self._views: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """The store as error messages name it (no secrets)."""
        return self.config.type

    def _failure(self, what: str, exc: BaseException) -> StoreError:
        """A StoreError for a failed call, with every secret of the config scrubbed from the message. A cause
        whose own text holds a secret is dropped, since a traceback would print it."""
        raw = f"{type(exc).__name__}: {exc}"
        safe = self.config.scrub(raw)
        err = StoreError(f"{self.where} {what} failed: {safe}")
        err.__cause__ = exc if safe == raw else None
        err.__suppress_context__ = True
        return err

    # ---- registry ---------------------------------------------------------------------------------------
    def apply(self) -> None:
        import importlib
        defs = importlib.import_module("features.feature_repo.definitions")
        with self._lock:
            try:
                self.fs.apply(defs.ALL)
            except Exception as exc:
                raise self._failure("apply of the feature definitions", exc)
            self._views.clear()

    def _view(self, name: str):
        view = self._views.get(name)
        if view is None:
            from feast.errors import FeatureViewNotFoundException
            try:
                view = self.fs.get_feature_view(name)
            except FeatureViewNotFoundException:
                self.apply()
                view = self.fs.get_feature_view(name)
            self._views[name] = view
        return view

    @property
    def _provider(self):
        return self.fs._get_provider()

    def _key(self, join_key: str, value: str):
        return self._EntityKey(join_keys=[join_key], entity_values=[self._Value(string_val=value)])

    # ---- users --------------------------------------------------------------------------------------------
    def _user_values(self, st: UserState) -> dict:
        V, I, S = self._Value, self._Int64List, self._StringList
        parts = sorted(st.applied)
        return {
            "history_codes": V(bytes_val=pack_codes(st.codes)),
            "code_layers": V(int64_val=st.n_layers),
            "history_len": V(int64_val=int(st.codes.shape[0])),
            "recent_item_ids": V(string_list_val=S(val=list(st.recent_items))),
            "recent_event_times_ms": V(int64_list_val=I(val=[int(t) for t in st.recent_times_ms])),
            "applied_partitions": V(int64_list_val=I(val=parts)),
            "applied_offsets": V(int64_list_val=I(val=[int(st.applied[p]) for p in parts])),
            "last_event_time_ms": V(int64_val=int(st.last_event_time_ms)),
            "n_applied": V(int64_val=int(st.n_applied)),
            "codebook_id": V(string_val=st.codebook_id),
        }

    @staticmethod
    def _user_from_values(user_id: str, v: dict | None) -> UserState | None:
        """Row → state; None when the user has no row (SQLite gives no values, Redis gives empty protos)."""
        def one(name: str, default: Any) -> Any:
            val = v.get(name)
            kind = None if val is None else val.WhichOneof("val")
            return default if kind is None else getattr(val, kind)

        def many(name: str) -> list:
            val = v.get(name)
            kind = None if val is None else val.WhichOneof("val")
            return [] if kind is None else list(getattr(val, kind).val)

        if not v or one("n_applied", None) is None:
            return None
        layers = int(one("code_layers", 0))
        return UserState(
            user_id=user_id,
            codes=unpack_codes(one("history_codes", b""), layers),
            recent_items=many("recent_item_ids"),
            recent_times_ms=many("recent_event_times_ms"),
            applied=dict(zip(many("applied_partitions"), many("applied_offsets"))),
            last_event_time_ms=int(one("last_event_time_ms", -1)),
            n_applied=int(one("n_applied", 0)),
            codebook_id=str(one("codebook_id", "")))  # rows written before codebook versions have none

    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        if not user_ids:
            return {}
        user_ids = list(dict.fromkeys(user_ids))
        try:
            rows = self._provider.online_read(self.repo_config, self._view(USER_VIEW),
                                              [self._key("user_id", u) for u in user_ids], _USER_FEATURES)
        except Exception as exc:  # backend errors come in many classes (sqlite3, redis, ...)
            raise self._failure(f"read of {len(user_ids)} users", exc)
        out = {}
        for uid, (_ts, values) in zip(user_ids, rows):
            state = self._user_from_values(uid, values)
            if state is not None:
                out[uid] = state
        return out

    def _user_rows(self, states: Sequence[UserState]) -> list[tuple]:
        """Rows in the shape of Feast's online_write_batch: (entity key, values, event time, created time)."""
        now = datetime.now(timezone.utc)
        return [(self._key("user_id", st.user_id), self._user_values(st), _ts_from_ms(st.last_event_time_ms), now)
                for st in states]

    @staticmethod
    def _fence_decision(parts: dict, stored: dict[int, int]) -> set[int]:
        """Partitions whose batch offset is not beyond the stored one (see OnlineStore.write_users_fenced)."""
        return {p for p, (offset, _) in parts.items() if p in stored and offset <= stored[p]}

    @staticmethod
    def _unchanged_decision(expected: Mapping[str, UserState | None], stored: Mapping[str, UserState],
                            new: Sequence[UserState]) -> set[str]:
        """Users of ``new`` whose stored row differs from ``expected`` (see OnlineStore.write_users_if_unchanged)."""
        return {st.user_id for st in new if stored.get(st.user_id) != expected[st.user_id]}

    @staticmethod
    def _check_expected(expected: Mapping[str, UserState | None], new: Sequence[UserState]) -> list[UserState]:
        new = list(new)
        missing = [st.user_id for st in new if st.user_id not in expected]
        if missing:
            raise ValueError(f"write_users_if_unchanged: no expected row for {len(missing)} user(s), e.g. "
                             f"{missing[0]!r} (pass None for a user that has no row)")
        if len({st.user_id for st in new}) != len(new):
            raise ValueError("write_users_if_unchanged: a user appears twice in `new`")
        return new

    def write_users(self, states: Sequence[UserState]) -> None:
        if not states:
            return
        try:
            self._provider.online_write_batch(self.repo_config, self._view(USER_VIEW), self._user_rows(states), None)
        except Exception as exc:
            raise self._failure(f"write of {len(states)} users", exc)

    # ---- items --------------------------------------------------------------------------------------------
    def write_item_codes(self, item_ids: Sequence[str], codes: np.ndarray, codebook_id: str = "",
                         chunk: int = 5000) -> None:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != len(item_ids):
            raise ValueError(f"codes must be [{len(item_ids)}, L], got {codes.shape}")
        now = datetime.now(timezone.utc)
        V, I = self._Value, self._Int64List
        view = self._view(ITEM_VIEW)
        rows = codes.astype(np.int64).tolist()
        for start in range(0, len(item_ids), chunk):
            data = [(self._key("item_id", str(i)), {"codes": V(int64_list_val=I(val=r)),
                                                    "codebook_id": V(string_val=codebook_id)}, now, now)
                    for i, r in zip(item_ids[start:start + chunk], rows[start:start + chunk])]
            try:
                self._provider.online_write_batch(self.repo_config, view, data, None)
            except Exception as exc:
                raise self._failure("write of item codes", exc)

    def read_item_codes(self, item_ids: Sequence[str], codebook_id: str | None = None) -> dict[str, np.ndarray]:
        if not item_ids:
            return {}
        item_ids = list(dict.fromkeys(str(i) for i in item_ids))
        try:
            rows = self._provider.online_read(self.repo_config, self._view(ITEM_VIEW),
                                              [self._key("item_id", i) for i in item_ids], ["codes", "codebook_id"])
        except Exception as exc:
            raise self._failure("read of item codes", exc)
        out = {}
        for iid, (ts, values) in zip(item_ids, rows):
            if values and values.get("codes") is not None and values["codes"].WhichOneof("val"):
                tag = values.get("codebook_id")
                if codebook_id is not None and (tag.string_val if tag is not None else "") != codebook_id:
                    continue  # another codebook's codes: meaningless under this one
                out[iid] = np.asarray(values["codes"].int64_list_val.val, dtype=np.int64)
        return out

    def history_nbytes(self, user_id: str) -> int:
        try:
            rows = self._provider.online_read(self.repo_config, self._view(USER_VIEW),
                                              [self._key("user_id", user_id)], ["history_codes"])
        except Exception as exc:
            raise self._failure("read of a history size", exc)
        ts, values = rows[0]
        if not values or values.get("history_codes") is None or not values["history_codes"].WhichOneof("val"):
            return 0
        return len(values["history_codes"].bytes_val)

    def get_online_features(self, user_ids: Sequence[str], features: Sequence[str] | None = None) -> dict:
        """Feast's public read path (what a Feast-native serving client does); returns columns as lists."""
        feats = [f"{USER_VIEW}:{f}" for f in (features or ["history_codes", "code_layers", "recent_item_ids"])]
        try:
            return self.fs.get_online_features(features=feats,
                                               entity_rows=[{"user_id": u} for u in user_ids]).to_dict()
        except Exception as exc:
            raise self._failure(f"feature read of {len(user_ids)} users", exc)
