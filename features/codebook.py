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

Balanced k-means (the paper does not name its variant; ours is in features/balanced_kmeans.py) bounds every
cluster's size at fit time, so the fit-time assignment of every layer satisfies ``lo <= size <= hi`` by
construction (``fit_sizes_``; bounds from ``config.balance_tolerance``: CodebookConfig.size_bounds).

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

from features.balanced_kmeans import EPS as _EPS, balanced_kmeans, cos_sims, unit_rows

FORMAT_VERSION = 1
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


def _project(res: np.ndarray, centres: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha [N] = e.c_b/||c_b||^2 and new residual [N, d] = e - alpha c_b (alpha = 0 for a zero centre)."""
    c = centres[codes]
    cn2 = np.einsum("nd,nd->n", c, c)
    alpha = np.where(cn2 > _EPS, np.einsum("nd,nd->n", res, c) / np.maximum(cn2, _EPS), 0.0).astype(np.float32)
    return alpha, res - alpha[:, None] * c


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
            x = unit_rows(x)
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
            centres[i], fit_assign = balanced_kmeans(res, config.codebook_size, config.kmeans_iters, lo, hi, rng)
            sizes[i] = np.bincount(fit_assign, minlength=config.codebook_size)
            # Codes and next residuals use the plain argmax, exactly as encode() will.
            codes = np.argmax(cos_sims(res, centres[i]), axis=1)
            _, res = _project(res, centres[i], codes)
        return cls(centres, config, sizes)

    # ------------------------------------------------------------------ encode / decode
    def encode_with_scales(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, d] -> (codes [N, L] uint8/uint16, scales [N, L] float16 projection coefficients alpha)."""
        x = _check_matrix(embeddings, d=self.dim)
        if self.config.normalize_input:
            x = unit_rows(x)
        n, nl = x.shape[0], self.config.n_layers
        codes = np.zeros((n, nl), dtype=self.code_dtype)
        scales = np.zeros((n, nl), dtype=np.float16)
        res = x
        for i in range(nl):
            b = np.argmax(cos_sims(res, self.centres[i]), axis=1)  # zero residual -> all cos 0 -> code 0, alpha 0
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
        xu = unit_rows(x[keep])

        def cos_stats(rec: np.ndarray) -> tuple[float, float]:
            cos = np.einsum("nd,nd->n", xu, unit_rows(rec[keep]))
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
