"""Cosine-similarity residual codebook (HyMiRec stage 1, paper notes section 2.2).

For layer i = 1..L, *balanced* k-means over the current residuals ``e^i`` of the base pool gives ``C`` centres
``c^i_1..c^i_C``. Each item's code is the plain cosine argmax ``b^i = argmax_x cos(e^i, c^i_x)`` and the next
residual removes the projection on the chosen centre::

    alpha^i = (e^i . c^i_b) / ||c^i_b||^2          e^{i+1} = e^i - alpha^i c^i_b

Decoding (both variants are inferred, the paper text only gives the encoder):

* codes only  : ``e_hat = sum_i c^i_{b^i}``               (1 or 2 bytes per layer)
* with scales : ``e_hat = sum_i alpha^i c^i_{b^i}``       (+2 bytes per layer, ``alpha`` stored as float16)

Because ``e = sum_i alpha^i c^i + e^{L+1}`` exactly, the with-scales reconstruction error ``||e^{L+1}||`` never
grows when a layer is added (each step removes a projection).

Balanced k-means (the paper does not name its variant; this one is ours): spherical-style k-means whose
assignment step is capacity constrained. Let ``m = N / C``. Every cluster may hold at most
``hi = max(ceil(m), floor(m * (1 + tol)))`` items and must hold at least ``lo = max(1, min(floor(m),
ceil(m * (1 - tol))))`` items, ``tol = config.balance_tolerance``. Items are assigned greedily by descending
cosine under the ``hi`` capacity (computed as the item-proposing stable matching, which for one shared score is
exactly the global greedy), then clusters under ``lo`` take their most similar items from clusters above ``lo``.
The final fit-time assignment of every layer therefore satisfies ``lo <= size <= hi`` *by construction*
(``fit_sizes_``); with ``tol = 0`` sizes are ``floor(m)`` or ``ceil(m)``. Centres are the (unnormalised) means of
their members' residuals, so the projection coefficients of members average about 1, which is what makes the
codes-only decode meaningful.

Training-time (balanced) and encode-time (argmax) assignments differ: codes always come from the argmax, as in the
paper, and the residuals that train layer i+1 are those argmax residuals, so ``encode`` on the base pool reproduces
exactly what the next layer was trained on. The argmax assignment is *not* guaranteed balanced; ``report`` gives its
cluster-size statistics too.

Zero rows (e.g. the padding row 0 of an item table) are skipped at fit time; they encode to code 0 with scale 0 at
every layer, so the with-scales decode gives the zero vector back (codes-only decode gives ``sum_i c^i_0``).
With ``normalize_input=True`` (default) rows are L2-normalised first and decode returns vectors in that
unit-norm space (cosine consumers are unaffected).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
_EPS = 1e-12
_F16_MAX = float(np.finfo(np.float16).max)


class CodebookFormatError(ValueError):
    """A saved codebook cannot be read: wrong format version, corrupted or tampered file."""


@dataclass
class CodebookConfig:
    """Hyper-parameters of :class:`ResidualCodebook`.

    n_layers: L, number of residual layers.
    codebook_size: C, centres per layer (codes are uint8 when C <= 256, else uint16; C <= 65536).
    kmeans_iters: maximum balanced k-means iterations per layer (stops earlier when the assignment is stable).
    balance_tolerance: tol; every fit-time cluster holds between ``lo`` and ``hi`` items (see module docstring),
        i.e. within about ±tol of N/C. 0 gives strictly balanced clusters (floor/ceil of N/C).
    seed: seed of the k-means++ initialisation; same seed + same input -> same centres and codes.
    normalize_input: L2-normalise rows before fitting/encoding (the assignment is by cosine anyway).
    """

    n_layers: int = 3
    codebook_size: int = 256
    kmeans_iters: int = 25
    balance_tolerance: float = 0.25
    seed: int = 0
    normalize_input: bool = True

    def __post_init__(self) -> None:
        if int(self.n_layers) < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if not 2 <= int(self.codebook_size) <= 65536:
            raise ValueError(f"codebook_size must be in [2, 65536] (codes are uint16), got {self.codebook_size}")
        if int(self.kmeans_iters) < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {self.kmeans_iters}")
        if not 0.0 <= float(self.balance_tolerance) < 1.0:
            raise ValueError(f"balance_tolerance must be in [0, 1), got {self.balance_tolerance}")

    def size_bounds(self, n: int) -> tuple[int, int]:
        """(lo, hi) cluster-size bounds guaranteed at fit time for a pool of ``n`` items."""
        m = n / self.codebook_size
        tol = float(self.balance_tolerance)
        hi = max(math.ceil(m), math.floor(m * (1.0 + tol)))
        lo = max(1, min(math.floor(m), math.ceil(m * (1.0 - tol))))
        return lo, hi


def _check_matrix(x: np.ndarray, name: str = "embeddings", d: int | None = None) -> np.ndarray:
    """Validate a [N, d] float matrix and return it as C-contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, d], got shape {x.shape}")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} has dimension {x.shape[1]}, the codebook was fitted on d={d}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{name} row {rows[0]} contains NaN/inf ({rows.size} bad rows in total)")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation [N, d] -> [N, d]; zero rows stay zero."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, _EPS)


def _cos_sims(res: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Cosine similarities [N, C] between residuals [N, d] and centres [C, d] (0 against zero vectors)."""
    return _unit(res) @ _unit(centres).T


def _project(res: np.ndarray, centres: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha [N] = e.c_b/||c_b||^2 and new residual [N, d] = e - alpha c_b (alpha = 0 for a zero centre)."""
    c = centres[codes]
    cn2 = np.einsum("nd,nd->n", c, c)
    alpha = np.where(cn2 > _EPS, np.einsum("nd,nd->n", res, c) / np.maximum(cn2, _EPS), 0.0).astype(np.float32)
    return alpha, res - alpha[:, None] * c


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cosine k-means++ seeding: indices [k] of distinct rows of x [N, d], sampled with weight 1 - max cos."""
    xu = _unit(x)
    n = xu.shape[0]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    best = xu @ xu[chosen[0]]
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    for j in range(1, k):
        w = np.clip(1.0 - best, 0.0, None).astype(np.float64)
        w[taken] = 0.0
        total = w.sum()
        # Degenerate pools (duplicates, zero residuals): fall back to a uniform draw among the rows not taken.
        if total <= 1e-9:
            w, total = (~taken).astype(np.float64), float((~taken).sum())
        # inverse-CDF draw (rng.choice(p=...) re-validates p each call and dominates the cost)
        chosen[j] = min(int(np.searchsorted(np.cumsum(w), rng.random() * total, side="right")), n - 1)
        while taken[chosen[j]]:  # float round-off at the top end can land on a taken row
            chosen[j] -= 1
        taken[chosen[j]] = True
        np.maximum(best, xu @ xu[chosen[j]], out=best)
    return chosen


def _greedy_capacity_assign(sims: np.ndarray, hi: int) -> np.ndarray:
    """Greedy-by-descending-cosine assignment with at most ``hi`` items per cluster.

    sims: [N, C] float32. Returns [N] int64. Implemented as the item-proposing stable matching (vectorised rounds):
    with one score shared by both sides it is the unique stable matching, i.e. the global greedy. A cluster that
    refused an item never takes it later (its admission threshold only rises), so refusals are masked to -inf and
    an item's next proposal is the argmax of its remaining row; most items are accepted at their first choice.
    """
    n, c = sims.shape
    work = sims.copy()
    assign = np.full(n, -1, dtype=np.int64)
    free = np.arange(n)
    while free.size:
        prop = np.argmax(work[free], axis=1)
        affected = np.zeros(c, dtype=bool)
        affected[prop] = True
        held = np.flatnonzero(assign >= 0)
        held = held[affected[assign[held]]]
        items = np.concatenate([held, free])
        clus = np.concatenate([assign[held], prop])
        score = sims[items, clus]
        order = np.lexsort((items, -score, clus))  # by cluster, then score desc, then index (deterministic ties)
        clus_s = clus[order]
        start = np.searchsorted(clus_s, clus_s, side="left")
        keep = (np.arange(order.size) - start) < hi
        acc, rej = items[order[keep]], items[order[~keep]]
        assign[acc] = clus_s[keep]
        assign[rej] = -1
        work[rej, clus_s[~keep]] = -np.inf
        free = np.sort(rej)
    return assign


def _fill_to_lower(sims: np.ndarray, assign: np.ndarray, lo: int) -> np.ndarray:
    """Move items so that every cluster holds >= lo (feasible when N >= C*lo); donors never drop below lo."""
    c = sims.shape[1]
    sizes = np.bincount(assign, minlength=c)
    for x in np.flatnonzero(sizes < lo):  # usually few clusters (centres in sparse regions)
        need = lo - sizes[x]
        cand = np.flatnonzero(sizes[assign] > lo)
        top = min(cand.size, 4 * need + 64)  # most walks end early: sort only a head, widen if it runs out
        while need > 0:
            part = cand if top >= cand.size else cand[np.argpartition(-sims[cand, x], top - 1)[:top]]
            part = part[np.lexsort((part, -sims[part, x]))]
            for j in part:
                if sizes[assign[j]] > lo and assign[j] != x:
                    sizes[assign[j]] -= 1
                    assign[j] = x
                    sizes[x] += 1
                    need -= 1
                    if need == 0:
                        break
            if top >= cand.size:
                break
            top = min(cand.size, top * 4)
    return assign


def _balanced_kmeans(x: np.ndarray, k: int, iters: int, lo: int, hi: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Balanced cosine k-means on x [N, d] -> (centres [k, d] float32, fit-time assignment [N] int64)."""
    # k-means++ on a random subsample: seeding is memory bound (one pass per centre); 16 candidates per centre
    # are plenty to spread the seeds, and the balanced iterations do the rest.
    n_cand = min(x.shape[0], max(16 * k, 4096))
    cand = np.sort(rng.choice(x.shape[0], size=n_cand, replace=False)) if n_cand < x.shape[0] else np.arange(x.shape[0])
    centres = x[cand[_kmeanspp(x[cand], k, rng)]].copy()
    assign = np.full(x.shape[0], -1, dtype=np.int64)
    d = x.shape[1]
    for _ in range(iters):
        sims = _cos_sims(x, centres)
        new = _fill_to_lower(sims, _greedy_capacity_assign(sims, hi), lo)
        if np.array_equal(new, assign):
            break
        assign = new
        # Cluster means with one flat bincount (float64 accumulation); np.add.at is ~10x slower. Every cluster has
        # >= lo >= 1 members by construction.
        counts = np.bincount(assign, minlength=k)
        flat = (assign[:, None] * d + np.arange(d)).ravel()
        sums = np.bincount(flat, weights=x.ravel(), minlength=k * d).reshape(k, d)
        centres = (sums / counts[:, None]).astype(np.float32)
    return centres.astype(np.float32), assign


class ResidualCodebook:
    """L-layer cosine residual codebook. ``centres``: [L, C, d] float32."""

    def __init__(self, centres: np.ndarray, config: CodebookConfig,
                 fit_sizes: np.ndarray | None = None) -> None:
        centres = np.ascontiguousarray(centres, dtype=np.float32)
        if centres.ndim != 3 or centres.shape[:2] != (config.n_layers, config.codebook_size):
            raise ValueError(f"centres shape {centres.shape} does not match config "
                             f"(n_layers={config.n_layers}, codebook_size={config.codebook_size}, d)")
        self.centres = centres
        self.config = config
        #: [L, C] int64 fit-time (balanced) cluster sizes, None when unknown.
        self.fit_sizes_ = None if fit_sizes is None else np.asarray(fit_sizes, dtype=np.int64)

    @property
    def dim(self) -> int:
        return int(self.centres.shape[2])

    @property
    def code_dtype(self) -> type:
        return np.uint8 if self.config.codebook_size <= 256 else np.uint16

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, embeddings: np.ndarray, config: CodebookConfig | None = None,
            progress: bool = False) -> "ResidualCodebook":
        """Fit on a base pool ``embeddings`` [N, d]. Zero rows are ignored; needs >= codebook_size non-zero rows."""
        config = config or CodebookConfig()
        x = _check_matrix(embeddings)
        x = x[np.linalg.norm(x, axis=1) > 0]
        if x.shape[0] < config.codebook_size:
            raise ValueError(f"fit needs at least codebook_size={config.codebook_size} non-zero embeddings, got "
                             f"{x.shape[0]}; lower codebook_size or add items")
        if config.normalize_input:
            x = _unit(x)
        lo, hi = config.size_bounds(x.shape[0])
        centres = np.empty((config.n_layers, config.codebook_size, x.shape[1]), dtype=np.float32)
        sizes = np.empty((config.n_layers, config.codebook_size), dtype=np.int64)
        layers = range(config.n_layers)
        if progress:
            from tqdm import tqdm  # lazy: keep the module import light
            layers = tqdm(layers, desc="codebook layers", unit="layer")
        res = x
        for i in layers:
            rng = np.random.default_rng([config.seed, i])
            centres[i], fit_assign = _balanced_kmeans(res, config.codebook_size, config.kmeans_iters, lo, hi, rng)
            sizes[i] = np.bincount(fit_assign, minlength=config.codebook_size)
            # Codes and next residuals use the plain argmax, exactly as encode() will.
            codes = np.argmax(_cos_sims(res, centres[i]), axis=1)
            _, res = _project(res, centres[i], codes)
        return cls(centres, config, sizes)

    # ------------------------------------------------------------------ encode / decode
    def encode_with_scales(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, d] -> (codes [N, L] uint8/uint16, scales [N, L] float16 projection coefficients alpha)."""
        x = _check_matrix(embeddings, d=self.dim)
        if self.config.normalize_input:
            x = _unit(x)
        n, nl = x.shape[0], self.config.n_layers
        codes = np.zeros((n, nl), dtype=self.code_dtype)
        scales = np.zeros((n, nl), dtype=np.float16)
        res = x
        for i in range(nl):
            b = np.argmax(_cos_sims(res, self.centres[i]), axis=1)  # zero residual -> all cos 0 -> code 0, alpha 0
            alpha, res = _project(res, self.centres[i], b)
            codes[:, i] = b
            # clip: a near-zero centre can give |alpha| beyond float16's range; inf would poison decode
            scales[:, i] = np.clip(alpha, -_F16_MAX, _F16_MAX)
        return codes, scales

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """[N, d] -> codes [N, L] (uint8 when codebook_size <= 256, else uint16). No refit needed for new items."""
        return self.encode_with_scales(embeddings)[0]

    def decode(self, codes: np.ndarray, scales: np.ndarray | None = None,
               n_layers: int | None = None) -> np.ndarray:
        """codes [N, L] (+ scales [N, L]) -> [N, d] float32 = sum_i (alpha_i) c^i_{b_i} over the first n_layers."""
        codes = np.asarray(codes)
        nl = self.config.n_layers if n_layers is None else int(n_layers)
        if codes.ndim != 2 or codes.shape[1] != self.config.n_layers:
            raise ValueError(f"codes must be [N, {self.config.n_layers}], got shape {codes.shape}")
        if not 1 <= nl <= self.config.n_layers:
            raise ValueError(f"n_layers must be in [1, {self.config.n_layers}], got {n_layers}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise ValueError(f"codes must be in [0, {self.config.codebook_size}), got range "
                             f"[{codes.min()}, {codes.max()}]")
        if scales is not None:
            scales = np.asarray(scales, dtype=np.float32)
            if scales.shape != codes.shape:
                raise ValueError(f"scales shape {scales.shape} must equal codes shape {codes.shape}")
        out = np.zeros((codes.shape[0], self.dim), dtype=np.float32)
        for i in range(nl):
            c = self.centres[i][codes[:, i].astype(np.int64)]
            out += c if scales is None else scales[:, i:i + 1] * c
        return out

    # ------------------------------------------------------------------ diagnostics
    def report(self, embeddings: np.ndarray) -> dict[str, Any]:
        """Reconstruction quality and storage cost on ``embeddings`` [N, d] (zero rows excluded from cos stats)."""
        x = _check_matrix(embeddings, d=self.dim)
        codes, scales = self.encode_with_scales(x)
        keep = np.linalg.norm(x, axis=1) > 0
        xu = _unit(x[keep])

        def cos_stats(rec: np.ndarray) -> tuple[float, float]:
            cos = np.einsum("nd,nd->n", xu, _unit(rec[keep]))
            return float(cos.mean()), float(np.percentile(cos, 5))

        nl, c = self.config.n_layers, self.config.codebook_size
        code_bytes = nl * np.dtype(self.code_dtype).itemsize
        f32 = self.dim * 4
        out: dict[str, Any] = {"n_items": int(x.shape[0]), "n_zero_rows": int((~keep).sum()), "dim": self.dim,
                               "n_layers": nl, "codebook_size": c}
        out["cos_mean_codes"], out["cos_p5_codes"] = cos_stats(self.decode(codes))
        out["cos_mean_scales"], out["cos_p5_scales"] = cos_stats(self.decode(codes, scales))
        out["cos_mean_scales_per_layer"] = [cos_stats(self.decode(codes, scales, n_layers=l))[0]
                                            for l in range(1, nl + 1)]
        out.update(bytes_per_item_codes=code_bytes, bytes_per_item_scales=code_bytes + 2 * nl,
                   bytes_float32=f32, ratio_codes=f32 / code_bytes, ratio_scales=f32 / (code_bytes + 2 * nl),
                   codebook_bytes=int(self.centres.nbytes))
        out["encode_cluster_sizes"] = [_size_stats(np.bincount(codes[keep, i].astype(np.int64), minlength=c))
                                       for i in range(nl)]
        if self.fit_sizes_ is not None:
            out["fit_cluster_sizes"] = [_size_stats(s) for s in self.fit_sizes_]
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write a versioned, checksummed .npz to exactly ``path`` (atomic replace). Returns the path."""
        path = Path(path)
        arrays = {"format_version": np.array(FORMAT_VERSION, dtype=np.int64),
                  "config": np.array(json.dumps(asdict(self.config), sort_keys=True)),
                  "centres": self.centres,
                  "sha256": np.array(_checksum(self.centres))}
        if self.fit_sizes_ is not None:
            arrays["fit_sizes"] = self.fit_sizes_
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:  # file handle: np.savez would otherwise append ".npz" to the name
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ResidualCodebook":
        """Read a file written by :meth:`save`; raises CodebookFormatError on version mismatch or corruption."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, io.UnsupportedOperation) as e:
            raise CodebookFormatError(f"{path}: not a readable codebook file (corrupted or truncated?): {e}") from e
        missing = {"format_version", "config", "centres", "sha256"} - data.keys()
        if missing:
            raise CodebookFormatError(f"{path}: missing fields {sorted(missing)}; not a codebook file")
        version = int(data["format_version"])
        if version != FORMAT_VERSION:
            raise CodebookFormatError(f"{path}: format version {version}, this code reads version {FORMAT_VERSION}")
        centres = np.ascontiguousarray(data["centres"], dtype=np.float32)
        if _checksum(centres) != str(data["sha256"]):
            raise CodebookFormatError(f"{path}: sha256 checksum of the centres does not match; file is corrupted")
        try:
            raw = json.loads(str(data["config"]))
            config = CodebookConfig(**{f.name: raw[f.name] for f in fields(CodebookConfig) if f.name in raw})
            return cls(centres, config, data.get("fit_sizes"))
        except (ValueError, TypeError) as e:
            raise CodebookFormatError(f"{path}: invalid config/centres: {e}") from e


def _checksum(centres: np.ndarray) -> str:
    """sha256 over the shape and the little-endian float32 bytes of the centres."""
    h = hashlib.sha256(repr(tuple(centres.shape)).encode())
    h.update(np.ascontiguousarray(centres, dtype="<f4").tobytes())
    return h.hexdigest()


def _size_stats(sizes: np.ndarray) -> dict[str, float]:
    """min / max / coefficient of variation / empty-cluster count of a [C] size vector."""
    sizes = np.asarray(sizes, dtype=np.float64)
    mean = sizes.mean()
    return {"min": int(sizes.min()), "max": int(sizes.max()), "cv": float(sizes.std() / mean) if mean else 0.0,
            "empty": int((sizes == 0).sum())}
