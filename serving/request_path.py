"""The recommend call: stages wired with their fallbacks, per-stage timing and degraded-mode flags.

Modes (worst wins):  full → coarse_only (Triton down: coarse interests as queries) → popular (Milvus down,
unknown user, store down, or any unexpected failure). A valid request always gets an answer.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from serving.config import ServingConfig
from serving.history import HistoryUnavailable, StoreHistorySource
from serving.index import ItemIndex
from serving.run_artifacts import Artifacts
from serving.stages import (CoarseQueries, Decode, Encode, FetchHistory, Merge,
                            Popular, Refine, Search, StageUnavailable)

log = logging.getLogger(__name__)

MODES = ("full", "coarse_only", "popular")
REASONS = ("unknown_user", "store_unavailable", "triton_unavailable", "coarse_unavailable", "milvus_unavailable",
           "internal_error")


class RecommendPipeline:
    """No I/O in __init__; start() loads artifacts and opens every client."""

    def __init__(self, config: ServingConfig, history_source=None, index: ItemIndex | None = None):
        self.config = config
        self.artifacts = Artifacts(Path(config.artifact_dir))
        layout = self.artifacts.layout
        self.fetch = FetchHistory(history_source or StoreHistorySource(config.feast_repo))
        self.decode = Decode(self.artifacts)
        self.encode = Encode(layout.encoder_onnx, config.ort_threads)
        self.coarse = CoarseQueries(layout.coarse_head_onnx, 0, config.ort_threads)
        self.refine = Refine(config.triton_url, config.triton_model, config.triton_timeout_s,
                             config.breaker_cooldown_s)
        self.search = Search(index or ItemIndex(config.milvus, config.milvus_alias, token=config.milvus_token,
                                                timeout_s=config.milvus_timeout_s,
                                                search_params={"ef": config.milvus_ef},
                                                consistency=config.milvus_consistency), config.breaker_cooldown_s)
        self.merge = Merge(config.quotas, config.merge)
        self.popular = Popular(self.artifacts)
        self.started = False
        self._lock = threading.Lock()

    @property
    def stages(self):
        return [self.fetch, self.decode, self.encode, self.refine, self.coarse, self.search, self.merge, self.popular]

    def describe(self) -> list[dict]:
        return [{"name": s.name, "inputs": list(s.inputs), "outputs": list(s.outputs)} for s in self.stages]

    def start(self) -> "RecommendPipeline":
        with self._lock:
            if self.started:
                return self
            self.artifacts.load()
            self.coarse.d_out = int(self.artifacts.dims["d_out"])
            for stage in self.stages:
                stage.start()
            self.started = True
        return self

    def close(self) -> None:
        for stage in self.stages:
            try:
                stage.close()
            except Exception:  # noqa: BLE001
                pass
        self.started = False

    def checks(self) -> dict[str, bool]:
        return {"artifacts": self.started, "store": self.fetch.ping(), "triton": self.refine.ping(),
                "milvus": self.search.ping()}

    # ------------------------------------------------------------------------------------------------ call
    def recommend(self, user_id: str, k: int | None = None, exclude_seen: bool = True) -> dict:
        k = int(k or self.config.default_k)
        started = time.perf_counter()
        self.artifacts.refresh_extra()  # items the refresh DAG added since the run (a stat every 2 s)
        timings: dict[str, float] = {}
        reasons: list[str] = []
        ctx: dict = {"user_id": str(user_id), "k": k, "exclude": np.zeros(0, np.int64)}
        model_version = {"encoder": self.artifacts.versions.get("encoder"), "llm": None}

        def timed(stage, c=ctx):
            t = time.perf_counter()
            try:
                return stage(c)
            finally:
                timings[stage.name] = (time.perf_counter() - t) * 1000.0

        mode = "full"
        try:
            try:
                timed(self.fetch)
            except HistoryUnavailable:
                reasons.append("store_unavailable")
                raise _Fallback
            if not ctx["known_user"]:
                reasons.append("unknown_user")
                raise _Fallback
            timed(self.decode)
            if exclude_seen:
                ctx["exclude"] = ctx["seen"]
            timed(self.encode)
            try:
                timed(self.refine)
                model_version["llm"] = ctx["model_version"]
            except StageUnavailable as exc:
                reasons.append("triton_unavailable")
                log.debug("refine degraded: %s", exc)
                mode = "coarse_only"
                try:
                    timed(self.coarse)
                except StageUnavailable:
                    reasons.append("coarse_unavailable")
                    raise _Fallback
            interests = np.asarray(ctx["interests"], np.float32)[0]  # [K, d_out]
            ctx["interests"] = interests
            ctx["interest_mask"] = np.linalg.norm(interests, axis=1) > 1e-6
            per = self.config.candidates_per_interest or (k + len(ctx["exclude"]) + 10)
            ctx["limit"] = per
            try:
                timed(self.search)
            except StageUnavailable as exc:
                reasons.append("milvus_unavailable")
                log.debug("search degraded: %s", exc)
                raise _Fallback
            timed(self.merge)
        except _Fallback:
            mode = "popular"
            timed(self.popular)
        except Exception:  # noqa: BLE001 - never a 5xx for a valid request
            log.exception("recommend(%s) failed; serving popular items", user_id)
            reasons.append("internal_error")
            mode = "popular"
            timed(self.popular)

        art = self.artifacts
        named = []  # (index, raw id, score, interest) of the items this run can name
        for i, score, interest in zip(ctx["items"], ctx["scores"], ctx["interest"]):
            name = art.name(int(i))
            if name is not None:
                named.append((int(i), name, float(score), int(interest)))
        if len(named) < len(ctx["items"]):  # an index Milvus holds but this run cannot name: never shown
            log.warning("recommend(%s): dropped %d unnamed item indices", user_id, len(ctx["items"]) - len(named))
        items = [i for i, _, _, _ in named]
        timings["total"] = (time.perf_counter() - started) * 1000.0
        return {
            "user_id": str(user_id),
            "k": k,
            "mode": mode,
            "degraded": bool(reasons),
            "degraded_reasons": reasons,
            "items": [name for _, name, _, _ in named],
            "item_index": items,
            "scores": [round(s, 6) for _, _, s, _ in named],
            "interests": [j for _, _, _, j in named],
            "titles": [art.title(i) for i in items],
            "model_version": model_version,
            "index_version": ctx.get("index_version") if mode != "popular" else None,
            "latency_ms": {name: round(ms, 3) for name, ms in timings.items()},
        }


class _Fallback(Exception):
    pass
