"""The recommend call: stages wired with their fallbacks, per-stage timing and degraded-mode flags.

Modes (worst wins):  full → coarse_only (Triton down: coarse interests as queries) → popular (Milvus down,
unknown user, store down, or any unexpected failure). A valid request always gets an answer.

Each request is served from one release (serving/served_release.py): ``self.release`` is read once at its start;
with a release root (HYMIREC_RELEASE_ROOT) a follower thread swaps in the next release when the registry flips.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from core.releases import ReleaseError, current_release
from serving.config import ServingConfig
from serving.history import HistoryUnavailable, StoreHistorySource
from serving.index import ItemIndex
from serving.served_release import ReleaseFollower, ServedRelease
from serving.stages import (CoarseQueries, Decode, Encode, FetchHistory, Merge, Popular, Refine, Search,
                            StageUnavailable)

log = logging.getLogger(__name__)

MODES = ("full", "coarse_only", "popular")
# The stages in request order (each declares its inputs and outputs; /stages shows them).
STAGES = (FetchHistory, Decode, Encode, Refine, CoarseQueries, Search, Merge, Popular)
REASONS = ("unknown_user", "store_unavailable", "triton_unavailable", "coarse_unavailable", "milvus_unavailable",
           "codebook_unknown", "internal_error")


class RecommendPipeline:
    """No I/O in __init__; start() loads artifacts and opens every client."""

    def __init__(self, config: ServingConfig, history_source=None, index: ItemIndex | None = None):
        self.config = config
        self.release: ServedRelease | None = None  # read once per request; replaced whole by the follower
        self.follower: ReleaseFollower | None = None
        self.fetch = FetchHistory(history_source or StoreHistorySource(config.feast_repo))
        self.refine = Refine(config.triton_url, config.triton_model, config.triton_timeout_s,
                             config.breaker_cooldown_s)
        self.search = Search(index or ItemIndex(config.milvus, config.milvus_alias, token=config.milvus_token,
                                                timeout_s=config.milvus_timeout_s,
                                                search_params={"ef": config.milvus_ef},
                                                consistency=config.milvus_consistency), config.breaker_cooldown_s)
        self.merge = Merge(config.quotas, config.merge)
        self._own_index = index is None and config.milvus_uri is None  # may follow the release's Milvus URI
        self.started = False
        self._lock = threading.Lock()

    @property
    def artifacts(self):
        return self.release.artifacts

    @property
    def stages(self):
        shared = [self.fetch, self.refine, self.search, self.merge]
        return shared + (self.release.stages if self.release is not None else [])

    def describe(self) -> list[dict]:
        return [{"name": s.name, "inputs": list(s.inputs), "outputs": list(s.outputs)} for s in STAGES]

    def start(self) -> "RecommendPipeline":
        with self._lock:
            if self.started:
                return self
            root = self.config.release_root
            release = current_release(root) if root is not None else None
            if root is not None and release is None and not Path(self.config.artifact_dir).exists():
                raise ReleaseError(f"{root}: the registry names no current release yet, and there is no run "
                                   f"directory at {self.config.artifact_dir}: promote a release first")
            if release is not None and self._own_index:
                self.search.index.uri = release.milvus_uri  # the URI the release's collection lives at
            self.release = self._load(release)
            for stage in (self.fetch, self.refine, self.search, self.merge):
                stage.start()
            if root is not None:
                self.follower = ReleaseFollower(Path(root), self.config.release_poll_s, self._load, self._swap)
                if release is not None:
                    self.follower.prime(release)
                self.follower.start()
            self.started = True
        return self

    def _load(self, release) -> ServedRelease:
        run_dir = self.config.artifact_dir if release is None else release.run_dir
        return ServedRelease.load(run_dir, self.config.ort_threads, release, self.config.release_root)

    def _swap(self, bundle: ServedRelease) -> None:
        # One assignment: a request already running keeps the bundle it read; the old ONNX sessions are freed
        # when the last such request drops its reference.
        self.release = bundle

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
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
        rel = self.release  # this request's release, from start to end
        rel.artifacts.refresh_extra()  # items the refresh DAG added since the run (a stat every 2 s)
        timings: dict[str, float] = {}
        reasons: list[str] = []
        ctx: dict = {"user_id": str(user_id), "k": k, "exclude": np.zeros(0, np.int64),
                     "triton_version": rel.triton_version, "collection": rel.collection}
        model_version = {"encoder": rel.artifacts.versions.get("encoder"), "llm": None}

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
            timed(rel.decode)
            if len(ctx["codes"]) and rel.artifacts.codebook is not None and not ctx["history_codebook"]:
                reasons.append("codebook_unknown")  # stored under a codebook no known release has
            if exclude_seen:
                ctx["exclude"] = ctx["seen"]
            timed(rel.encode)
            try:
                timed(self.refine)
                model_version["llm"] = ctx["model_version"]
            except StageUnavailable as exc:
                reasons.append("triton_unavailable")
                log.debug("refine degraded: %s", exc)
                mode = "coarse_only"
                try:
                    timed(rel.coarse)
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
            timed(rel.popular)
        except Exception:  # noqa: BLE001 - never a 5xx for a valid request
            log.exception("recommend(%s) failed; serving popular items", user_id)
            reasons.append("internal_error")
            mode = "popular"
            timed(rel.popular)

        art = rel.artifacts
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
            "release": rel.version,
            "history_codebook": ctx.get("history_codebook"),  # the codebook the long history was decoded with
            "latency_ms": {name: round(ms, 3) for name, ms in timings.items()},
        }


class _Fallback(Exception):
    pass
