"""The online recall pipeline as stages with declared inputs and outputs.

    fetch   user_id                                  → codes, recent_items, codebook_id (online store)
    decode  codes, recent_items, codebook_id         → history_emb/mask, recent_emb/mask, seen, history_codebook
    encode  history_emb, history_mask                → coarse                        (ONNX Runtime, in-process)
    refine  coarse, recent_emb, recent_mask, triton_version → interests, model_version (Triton, gRPC)
    search  interests, limit, collection             → cand_ids, cand_scores, index_version (Milvus, nq = K)
    merge   cand_ids, cand_scores, k, seen           → items, scores, interest       (core.retrieval)

Fallbacks (flagged by the pipeline): `coarse` (coarse interests through the exported coarse head, when Triton
is down) and `popular` (item popularity, when Milvus is down or the user is unknown).
`triton_version` and `collection` pin a request to its release (serving/served_release.py): the LLM version and
the Milvus collection of the release whose artifacts decoded it. Constructors do no I/O; `start()` loads artifacts
and opens clients. Serving never imports `training`: every
file comes from the run directory through core.artifacts.RunLayout.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from core.artifacts import COARSE_HEAD_ONNX
from core.history_window import long_window
from serving.run_artifacts import Artifacts

log = logging.getLogger(__name__)



class StageUnavailable(RuntimeError):
    """A stage's backing service failed; the pipeline falls back."""


class CircuitBreaker:
    """After a failure, report 'open' for `cooldown_s` so requests skip a dead service instead of waiting on it."""

    def __init__(self, cooldown_s: float = 1.0):
        self.cooldown_s = cooldown_s
        self._open_until = 0.0
        self._lock = threading.Lock()
        self.failures = 0

    def allow(self) -> bool:
        return time.monotonic() >= self._open_until

    def fail(self) -> None:
        with self._lock:
            self.failures += 1
            self._open_until = time.monotonic() + self.cooldown_s

    def ok(self) -> None:
        self._open_until = 0.0


# ------------------------------------------------------------------------------------------------ artifacts
class Stage:
    name: ClassVar[str] = "stage"
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()

    def start(self) -> None:  # I/O goes here, never in __init__
        pass

    def __call__(self, ctx: dict) -> dict:
        missing = [k for k in self.inputs if k not in ctx]
        if missing:
            raise KeyError(f"stage {self.name}: missing inputs {missing}")
        out = self.run({k: ctx[k] for k in self.inputs})
        extra = set(out) - set(self.outputs)
        if extra:
            raise KeyError(f"stage {self.name}: undeclared outputs {sorted(extra)}")
        ctx.update(out)
        return out

    def run(self, inputs: dict) -> dict:
        raise NotImplementedError

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FetchHistory(Stage):
    name = "fetch"
    inputs = ("user_id",)
    outputs = ("codes", "recent_items", "known_user", "codebook_id")

    def __init__(self, source):
        self.source = source

    def start(self) -> None:
        self.source.start()

    def run(self, inputs: dict) -> dict:
        hist = self.source.get(inputs["user_id"])
        if hist is None or (len(hist.codes) == 0 and not hist.recent_items):
            return {"codes": np.zeros((0, 0), np.uint16), "recent_items": (), "known_user": False, "codebook_id": ""}
        return {"codes": np.asarray(hist.codes), "recent_items": tuple(hist.recent_items), "known_user": True,
                "codebook_id": str(getattr(hist, "codebook_id", "") or "")}

    def ping(self) -> bool:
        return self.source.ping()

    def close(self) -> None:
        self.source.close()


class Decode(Stage):
    """Codes → codebook-decoded long history; recent raw ids → exact embeddings of the last recent_n known items.
    Right-aligned, batch 1, no padding. The long window is training's rule (core.history_window, the manifest's
    long_len + long_window, "all" for older manifests); the stored codes end with the recent items, so "older"
    drops the last len(recent) codes: exactly the items the LLM recommender receives. Codes are decoded with the
    codebook that encoded them (``codebook_id``, Artifacts.codebook_for); when no codebook with that id is known
    the long history is left out (``history_codebook`` = "") rather than decoded with the wrong one."""

    name = "decode"
    inputs = ("codes", "recent_items", "codebook_id")
    outputs = ("history_emb", "history_mask", "recent_emb", "recent_mask", "seen", "history_codebook")

    def __init__(self, artifacts: Artifacts):
        self.art = artifacts

    def run(self, inputs: dict) -> dict:
        art, dims = self.art, self.art.dims
        d_item, long_len = int(dims["d_item"]), int(dims["long_len"])
        mode = dims.get("long_window", "all")
        recent_idx = np.array([art.index_of[r] for r in inputs["recent_items"] if r in art.index_of], np.int64)
        recent = recent_idx[-int(dims["recent_n"]):]
        codes = np.asarray(inputs["codes"])
        codebook, used = art.codebook_for(inputs["codebook_id"])
        if codes.size == 0 and len(recent_idx) and art.item_codes is not None:
            codes, (codebook, used) = art.item_codes[recent_idx], (art.codebook, art.codebook_id)
        hist = None
        if len(codes) and art.codebook is not None:
            codes = codes[long_window(len(codes), long_len, len(recent), mode)]
            if codebook is None:
                codes, used = codes[:0], ""  # unknown codebook: no long history rather than a wrong one
            if len(codes):
                hist = codebook.decode(codes).astype(np.float32)
        else:  # no codes, or no codebook in the run (ablation): exact embeddings of the known raw ids
            older = recent_idx[long_window(len(recent_idx), long_len, len(recent), mode)]
            if len(older):
                hist = np.asarray(art.item_embeddings[older], np.float32)
        if hist is None:  # an empty long window: one masked slot, which the encoder ignores
            hist, hist_mask = np.zeros((1, d_item), np.float32), np.zeros((1, 1), np.float32)
        else:
            hist_mask = np.ones((1, len(hist)), np.float32)
        if len(recent):
            recent_emb = np.asarray(art.recent_embeddings[recent], np.float32)[None]
            recent_mask = np.ones((1, len(recent)), np.float32)
        else:
            recent_emb = np.zeros((1, 1, d_item), np.float32)
            recent_mask = np.zeros((1, 1), np.float32)
        # items added since the run (no exact embedding, so not among the recent inputs) are still seen
        extra = [art.extra_index_of[r] for r in inputs["recent_items"] if r in art.extra_index_of]
        seen = np.concatenate([recent_idx, np.array(extra, np.int64)]) if extra else recent_idx
        return {"history_emb": hist[None], "history_mask": hist_mask, "recent_emb": recent_emb,
                "recent_mask": recent_mask, "seen": seen, "history_codebook": used}


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=_ort_providers())


class Encode(Stage):
    """Lightweight encoder, in-process ONNX Runtime (CUDA provider when onnxruntime-gpu and a GPU exist)."""

    name = "encode"
    inputs = ("history_emb", "history_mask")
    outputs = ("coarse",)

    def __init__(self, onnx_path: Path, threads: int = 1):
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.session = None

    def start(self) -> None:
        self.session = _ort_session(self.onnx_path, self.threads)

    def run(self, inputs: dict) -> dict:
        coarse = self.session.run(["coarse"], {"history_emb": inputs["history_emb"],
                                               "history_mask": inputs["history_mask"]})[0]
        return {"coarse": coarse}


class CoarseQueries(Stage):
    """Triton-down fallback: the K_c coarse interests as retrieval queries (coarse head → d_out, L2-normalised)."""

    name = "coarse_queries"
    inputs = ("coarse",)
    outputs = ("interests",)

    def __init__(self, onnx_path: Path, d_out: int, threads: int = 1):
        self.onnx_path = Path(onnx_path)
        self.d_out = d_out
        self.threads = threads
        self.session = None

    def start(self) -> None:
        if self.onnx_path.exists():
            self.session = _ort_session(self.onnx_path, self.threads)

    def run(self, inputs: dict) -> dict:
        coarse = inputs["coarse"]
        if self.session is not None:
            vecs = self.session.run(None, {"coarse": coarse})[0]
        elif coarse.shape[-1] == self.d_out:
            vecs = coarse / np.maximum(np.linalg.norm(coarse, axis=-1, keepdims=True), 1e-12)
        else:
            raise StageUnavailable(f"no {COARSE_HEAD_ONNX} and coarse width {coarse.shape[-1]} != d_out {self.d_out}")
        return {"interests": vecs.astype(np.float32)}


class Refine(Stage):
    """LLM recommender on Triton through the gRPC client."""

    name = "refine"
    inputs = ("coarse", "recent_emb", "recent_mask", "triton_version")
    outputs = ("interests", "model_version")
    tensors = ("coarse", "recent_emb", "recent_mask")

    def __init__(self, url: str | None, model: str = "llm", timeout_s: float = 1.0, cooldown_s: float = 1.0):
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.breaker = CircuitBreaker(cooldown_s)
        self.client = None

    def start(self) -> None:
        if self.url:
            import tritonclient.grpc as grpcclient

            self.client = grpcclient.InferenceServerClient(self.url)

    def run(self, inputs: dict) -> dict:
        import tritonclient.grpc as grpcclient

        if self.client is None:
            raise StageUnavailable("Triton is not configured")
        if not self.breaker.allow():
            raise StageUnavailable("Triton marked down (circuit open)")
        tensors = []
        for name in self.tensors:
            arr = np.ascontiguousarray(inputs[name], dtype=np.float32)
            t = grpcclient.InferInput(name, list(arr.shape), "FP32")
            t.set_data_from_numpy(arr)
            tensors.append(t)
        try:
            result = self.client.infer(self.model, tensors, model_version=str(inputs["triton_version"] or ""),
                                       outputs=[grpcclient.InferRequestedOutput("interests")],
                                       client_timeout=self.timeout_s)
            interests = result.as_numpy("interests")
            if interests is None or interests.ndim != 3 or interests.shape[0] != 1:
                raise StageUnavailable(f"Triton returned interests {None if interests is None else interests.shape}")
        except StageUnavailable:
            self.breaker.fail()
            raise
        except Exception as exc:  # noqa: BLE001 - any client/server error degrades
            self.breaker.fail()
            raise StageUnavailable(f"Triton infer failed: {str(exc).splitlines()[0][:200]}") from exc
        self.breaker.ok()
        return {"interests": interests, "model_version": f"{self.model}/{result.get_response().model_version}"}

    def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            return bool(self.client.is_model_ready(self.model, client_timeout=self.timeout_s))
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
            self.client = None


class Search(Stage):
    """One Milvus search with nq = K over the release's collection (by name), or the alias when none is pinned."""

    name = "search"
    inputs = ("interests", "limit", "collection")
    outputs = ("cand_ids", "cand_scores", "index_version")

    def __init__(self, index, cooldown_s: float = 1.0):
        self.index = index
        self.breaker = CircuitBreaker(cooldown_s)
        self._started = False

    def start(self) -> None:
        try:
            self.index.start()
            self._started = self.index.version is not None
            if not self._started:
                log.warning("Milvus alias %s has no collection yet: run `hymirec index build`", self.index.alias)
        except Exception as exc:  # noqa: BLE001 - serve popular items until Milvus is there
            log.warning("Milvus unavailable at start: %s", exc)

    def run(self, inputs: dict) -> dict:
        if not self.breaker.allow():
            raise StageUnavailable("Milvus marked down (circuit open)")
        collection = inputs["collection"]
        try:
            if collection:
                if self.index._client is None:
                    self.index.start(load=False)
                self._started = True
            elif not self._started:
                self.index.start()
                if self.index.version is None:
                    raise StageUnavailable("item index not built")
                self._started = True
            queries = np.asarray(inputs["interests"], np.float32).reshape(-1, inputs["interests"].shape[-1])
            ids, scores = self.index.search(queries, int(inputs["limit"]), collection=collection or None)
        except StageUnavailable:
            self.breaker.fail()
            raise
        except Exception as exc:  # noqa: BLE001
            self.breaker.fail()
            raise StageUnavailable(f"Milvus search failed: {str(exc).splitlines()[0][:200]}") from exc
        self.breaker.ok()
        return {"cand_ids": ids, "cand_scores": scores, "index_version": collection or self.index.version}

    def ping(self) -> bool:
        return self.index.ping() if self._started or self.index._client is not None else False

    def close(self) -> None:
        self.index.close()


class Merge(Stage):
    """core.retrieval.merge_interest_candidates: max over interests, dedup, quotas, seen filtered, stable."""

    name = "merge"
    inputs = ("cand_ids", "cand_scores", "k", "exclude", "interest_mask")
    outputs = ("items", "scores", "interest")

    def __init__(self, quotas: tuple[int, ...] | None = None, mode: str = "max"):
        self.quotas = quotas
        self.mode = mode  # "quota": every unmasked interest gets k // K guaranteed slots (ServingConfig.merge)

    def run(self, inputs: dict) -> dict:
        from core.retrieval import equal_quotas, merge_interest_candidates

        ids = inputs["cand_ids"]
        quotas = list(self.quotas) if self.quotas and len(self.quotas) == ids.shape[0] else None
        if self.mode == "quota" and quotas is None:
            mask = inputs["interest_mask"]
            quotas = equal_quotas(inputs["k"], mask if mask is not None else [True] * ids.shape[0])
        if quotas is not None and sum(quotas) > inputs["k"]:
            quotas = None
        merged = merge_interest_candidates(ids, inputs["cand_scores"], int(inputs["k"]), exclude=inputs["exclude"],
                                           quotas=quotas, interest_mask=inputs["interest_mask"])
        return {"items": merged.item_ids, "scores": merged.scores, "interest": merged.interest}


class Popular(Stage):
    """Fallback: the most popular items (training counts), seen items filtered; interest = -1."""

    name = "popular"
    inputs = ("k", "exclude")
    outputs = ("items", "scores", "interest")

    def __init__(self, artifacts: Artifacts):
        self.art = artifacts

    def run(self, inputs: dict) -> dict:
        order = self.art.popularity_order
        k = int(inputs["k"])
        exclude = np.asarray(inputs["exclude"], np.int64)
        take = order[: k + len(exclude)]
        if len(exclude):
            take = take[~np.isin(take, exclude)]
        take = take[:k]
        pop = self.art.popularity[take]
        scores = (pop / max(float(self.art.popularity[order[0]]), 1.0)) if len(order) else pop
        return {"items": take.astype(np.int64), "scores": scores.astype(np.float32),
                "interest": np.full(len(take), -1, np.int64)}
