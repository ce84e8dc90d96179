"""Diversity of top-K lists, measured with one item table per dataset for every method.

* ILD@k (intra-list distance): per user, the mean over all pairs of the list's first ``k`` items of
  ``1 - cosine(e_i, e_j)``; averaged over users. Embeddings: the stage-1 item embeddings of the
  dataset's full HyMiRec run (``item_embeddings.npy``).
* clusters@k: per user, the number of distinct cluster labels among the first ``k`` items; averaged
  over users. Labels: the first (coarsest) layer of the cosine residual codebook (``item_codes.npy[:, 0]``).

Padding (id 0) is ignored; a user with fewer than two items has no pair and is left out of ILD.
"""
from __future__ import annotations

import numpy as np


def intra_list_distance(topk: np.ndarray, item_embeddings: np.ndarray, k: int = 50, chunk: int = 256) -> float:
    emb = np.asarray(item_embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    total, users = 0.0, 0
    for c0 in range(0, len(topk), chunk):
        ids = np.asarray(topk[c0:c0 + chunk, :k], dtype=np.int64)
        valid = ids > 0
        vecs = unit[ids] * valid[..., None]  # [B, k, d], padding rows zeroed
        cos = vecs @ vecs.transpose(0, 2, 1)  # [B, k, k]
        n = valid.sum(axis=1)
        pairs = n * (n - 1)  # ordered pairs i != j
        off_diag = cos.sum(axis=(1, 2)) - np.einsum("bii->b", cos)
        keep = pairs > 0
        total += float(np.sum(1.0 - off_diag[keep] / pairs[keep]))
        users += int(keep.sum())
    return total / users if users else float("nan")


def distinct_clusters(topk: np.ndarray, labels: np.ndarray, k: int = 50) -> float:
    ids = np.asarray(topk[:, :k], dtype=np.int64)
    if len(ids) == 0:
        return float("nan")
    lab = np.asarray(labels, dtype=np.int64)[ids]
    lab = np.where(ids > 0, lab, -1)
    lab.sort(axis=1)
    distinct = (np.diff(lab, axis=1) != 0).sum(axis=1) + 1 - (lab[:, 0] == -1)  # -1 (padding) not a cluster
    return float(distinct.mean())


def diversity(topk: np.ndarray, item_embeddings: np.ndarray | None, item_codes: np.ndarray | None,
              k: int = 50) -> dict[str, float | None]:
    """``{"ILD@k", "clusters@k"}``; None for a measure whose table is missing."""
    return {f"ILD@{k}": None if item_embeddings is None else intra_list_distance(topk, item_embeddings, k),
            f"clusters@{k}": None if item_codes is None else distinct_clusters(topk, np.asarray(item_codes)[:, 0], k)}
