"""The one evaluator: full-ranking Recall@k / NDCG@k for leave-one-out (one target per user).

* Ranks are 0-based; NDCG = ``1 / log2(rank + 2)`` when ``rank < k`` (one relevant item, so IDCG = 1);
  Recall@k = HR@k = ``rank < k``.
* Item 0 (padding) and the user's earlier items are masked; the target itself is never masked (a
  re-consumed item stays reachable).
* Ties: score descending, then item id ascending — the same order as ``core.retrieval``.
* Multi-interest models are scored with exactly the serving path: per-interest exact top-n lists
  merged by :func:`core.retrieval.merge_interest_candidates`. With ``n = max_k + #excluded`` the
  merged top-k equals the top-k of the full max-over-interests ranking (tested).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from core.retrieval import equal_quotas, merge_interest_candidates, topn_rows

DEFAULT_KS: tuple[int, ...] = (10, 20, 50)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``ranks int64 [U]`` (0-based; any value ``>= max(ks)`` = miss) → ``{"Recall@k", "NDCG@k", "users"}``."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out: dict[str, float] = {"users": int(len(ranks))}
    for k in ks:
        hit = ranks < k
        gain = np.where(hit, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
        out[f"Recall@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(gain.mean()) if len(ranks) else 0.0
    return out


def ranks_in_lists(topk_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its row of ``topk_ids [U, maxK]``; ``maxK`` when absent."""
    topk_ids = np.asarray(topk_ids)
    targets = np.asarray(targets, dtype=np.int64)
    if topk_ids.ndim != 2 or topk_ids.shape[0] != len(targets):
        raise ValueError(f"topk_ids {topk_ids.shape} must be [U, maxK] with U = {len(targets)}")
    match = topk_ids == targets[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), topk_ids.shape[1]).astype(np.int64)


def evaluate_rankings(
    topk_ids: np.ndarray, targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Metrics of ranked lists ``topk_ids int64 [U, maxK]`` (pad short rows with 0 or -1) vs ``targets [U]``.

    A list shorter than ``k`` simply cannot hit beyond its length.
    """
    return metrics_from_ranks(ranks_in_lists(topk_ids, targets), ks)


def target_ranks_from_scores(
    scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray
) -> np.ndarray:
    """Exact 0-based full-ranking rank of each target: ``scores [U, n_items+1]`` → ``int64 [U]``.

    rank = #items with a higher score + #items with an equal score and a smaller id, after masking
    item 0 and the history (except the target). No sort needed, O(n_items) per user.
    """
    scores = _to_numpy(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != len(targets) or len(histories) != len(targets):
        raise ValueError(f"scores {scores.shape}, {len(histories)} histories, {len(targets)} targets disagree")
    ranks = np.empty(len(targets), dtype=np.int64)
    ids = np.arange(scores.shape[1])
    chunk = max(1, (1 << 22) // max(1, scores.shape[1]))  # bound the float64 working copy
    for c0 in range(0, len(targets), chunk):
        c1 = min(len(targets), c0 + chunk)
        block = scores[c0:c1].astype(np.float64, copy=True)
        tgt = targets[c0:c1]
        rows = [np.full(len(histories[u]), u - c0, dtype=np.int64) for u in range(c0, c1)]
        if rows:
            r = np.concatenate(rows)
            h = np.concatenate([np.asarray(histories[u], dtype=np.int64) for u in range(c0, c1)])
            keep = h != tgt[r]  # the target itself is never masked
            block[r[keep], h[keep]] = -np.inf
        block[:, 0] = -np.inf
        st = block[np.arange(c1 - c0), tgt][:, None]
        ranks[c0:c1] = np.count_nonzero(block > st, axis=1) + np.count_nonzero(
            (block == st) & (ids[None, :] < tgt[:, None]), axis=1
        )
    return ranks


def _to_numpy(x) -> np.ndarray:
    """Accept numpy arrays or (CPU/GPU) torch tensors without importing torch here."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def evaluate_scores(
    scores: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Full-ranking metrics from ``scores float [U, n_items+1]`` (column = item index).

    Callers with many users should call this per batch of rows and average with
    :func:`merge_metric_batches`, or collect ranks via :func:`target_ranks_from_scores`.
    """
    return metrics_from_ranks(target_ranks_from_scores(scores, histories, targets), ks)


def topk_from_scores(
    scores: np.ndarray, histories: Sequence[np.ndarray], k: int, targets: np.ndarray | None = None
) -> np.ndarray:
    """Top-``k`` item ids per row of ``scores [U, n_items+1]`` after masking item 0 and history.

    When ``targets`` is given, each user's target is left unmasked. Returns ``int64 [U, k]``.
    """
    scores = np.array(_to_numpy(scores), dtype=np.float64, copy=True)
    scores[:, 0] = -np.inf
    for u, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        if targets is not None:
            h = h[h != targets[u]]
        scores[u, h] = -np.inf
    return topn_rows(scores, k)[0]


def topk_from_interests(
    interests: np.ndarray,
    item_vectors: np.ndarray,
    histories: Sequence[np.ndarray],
    k: int,
    targets: np.ndarray | None = None,
    batch_size: int = 256,
    drop_zero_interests: bool = True,
    quotas: Sequence[int] | None = None,
    quota_merge: bool = False,
) -> np.ndarray:
    """Serving-equivalent top-``k`` for multi-interest users → ``int64 [U, k]`` (short rows padded with 0).

    For each batch of users: scores ``[B, K, n_items+1]`` by inner product, exact per-interest
    top-``(k + max history length in batch)`` lists (item 0 excluded), then per user
    :func:`merge_interest_candidates` with ``exclude = history - {target}``. All-zero interest vectors
    are dropped through ``interest_mask`` when ``drop_zero_interests`` (padding interests).

    Args:
        interests: ``float [U, K, d]``.
        item_vectors: ``float [n_items+1, d]`` (row 0 = padding).
        histories: per user ``int64 [L_u]``.
        quotas: fixed ``[K]`` guaranteed slots per interest; ``quota_merge``: serving's quota merge instead
            (:func:`core.retrieval.equal_quotas` of each user's active interests).
    """
    interests = _to_numpy(interests).astype(np.float32, copy=False)
    item_vectors = _to_numpy(item_vectors).astype(np.float32, copy=False)
    n_users, n_interests, _ = interests.shape
    n_rows = item_vectors.shape[0]
    out = np.zeros((n_users, k), dtype=np.int64)
    # Bound the [B, K, N+1] score block (and argpartition's copies) to ~2^24 floats per batch.
    batch_size = max(1, min(batch_size, (1 << 24) // max(1, n_interests * n_rows)))
    for b0 in range(0, n_users, batch_size):
        b1 = min(n_users, b0 + batch_size)
        # One BLAS matmul ([B*K, d] @ [d, N+1]); einsum would not use BLAS here.
        scores = interests[b0:b1].reshape(-1, interests.shape[2]) @ item_vectors.T  # [B*K, N+1]
        scores[:, 0] = -np.inf
        max_hist = max((len(histories[u]) for u in range(b0, b1)), default=0)
        n = min(k + max_hist, n_rows - 1)
        ids, top = topn_rows(scores, n)
        ids = ids.reshape(b1 - b0, n_interests, n)
        top = top.reshape(b1 - b0, n_interests, n)
        for j, u in enumerate(range(b0, b1)):
            h = np.asarray(histories[u], dtype=np.int64)
            if targets is not None:
                h = h[h != targets[u]]
            mask = np.any(interests[u] != 0, axis=1) if drop_zero_interests else None
            if quota_merge:  # serving's quota merge (HYMIREC_MERGE=quota): k // #active slots per interest
                quotas = equal_quotas(k, mask if mask is not None else [True] * n_interests)
            merged = merge_interest_candidates(ids[j], top[j], k, exclude=h, interest_mask=mask, quotas=quotas)
            out[u, : len(merged)] = merged.item_ids
    return out


def evaluate_interests(
    interests: np.ndarray,
    item_vectors: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    quotas: Sequence[int] | None = None,
) -> dict[str, float]:
    """Metrics for multi-interest retrieval ``interests [U, K, d]`` × ``item_vectors [n_items+1, d]``."""
    topk = topk_from_interests(interests, item_vectors, histories, max(ks), targets, batch_size, quotas=quotas)
    return evaluate_rankings(topk, targets, ks)


def popularity_topk(
    train_sequences: Sequence[np.ndarray], n_items: int, histories: Sequence[np.ndarray], k: int
) -> np.ndarray:
    """Most-popular baseline: top-``k`` by training count (ties: smaller id), history removed → ``[U, k]``."""
    counts = np.bincount(
        np.concatenate([np.asarray(s, np.int64) for s in train_sequences] or [np.zeros(0, np.int64)]),
        minlength=n_items + 1,
    )[: n_items + 1]
    order = np.lexsort((np.arange(n_items + 1), -counts))
    order = order[order != 0]
    out = np.zeros((len(histories), k), dtype=np.int64)
    for u, h in enumerate(histories):
        head = order[: k + len(h)]  # enough to survive removing every history item
        head = head[~np.isin(head, h)][:k]
        out[u, : len(head)] = head
    return out


def merge_metric_batches(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """User-weighted average of metric dicts computed on disjoint user batches."""
    total = sum(p["users"] for p in parts)
    out: dict[str, float] = {"users": int(total)}
    for key in parts[0] if parts else ():
        if key != "users":
            out[key] = float(sum(p[key] * p["users"] for p in parts) / total) if total else 0.0
    return out


def eval_subset(n_users: int, max_users: int | None, seed: int = 0) -> np.ndarray | None:
    """Indices of at most ``max_users`` of ``n_users`` evaluation users, a fixed random subset (per-epoch
    validation speed); None when every user is kept."""
    if max_users is None or n_users <= max_users:
        return None
    return np.random.default_rng(seed).choice(n_users, max_users, replace=False)


def subsample_eval(histories: Sequence[np.ndarray], targets: np.ndarray, max_users: int | None,
                   seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """At most ``max_users`` (history, target) pairs, a fixed random subset (:func:`eval_subset`)."""
    keep = eval_subset(len(histories), max_users, seed)
    if keep is None:
        return list(histories), targets
    return [histories[i] for i in keep], targets[keep]


TOPK_LISTS = 100  # length of the test top-K lists written to the run directory


def sasrec_test(model, eval_set, k: int = TOPK_LISTS, chunk: int = 1024,
                rankable_targets: bool = False) -> tuple[dict, np.ndarray, float]:
    """SASRec on a test set, scoring users in chunks so [U, n_items+1] never sits in memory at once.

    Returns the evaluator's metrics (target never masked; = ``evaluate_sasrec``), the top-``k`` lists
    (whole history masked, the peer protocol's rule; with ``rankable_targets`` a re-consumed target stays
    rankable, the evaluator's rule) and the inference seconds (scores + top-k).
    """
    parts, lists, seconds = [], [], 0.0
    for i in range(0, len(eval_set.targets), chunk):
        histories, targets = eval_set.histories[i:i + chunk], eval_set.targets[i:i + chunk]
        t0 = time.perf_counter()
        scores = model.score(histories)
        lists.append(topk_from_scores(scores, histories, k, targets if rankable_targets else None))
        seconds += time.perf_counter() - t0
        parts.append(evaluate_scores(scores, histories, targets))
        del scores
    topk = np.concatenate(lists) if lists else np.zeros((0, k), np.int64)
    return merge_metric_batches(parts), topk, seconds


def hybrid_test(model, tables, eval_set, batch: int = 256, k: int = TOPK_LISTS) -> tuple[dict, np.ndarray, float]:
    """HyMiRec on a test set: interests once, then the evaluator's metrics (= ``evaluate_hybrid``), the
    top-``k`` lists under the protocol's rule and the inference seconds (interests + item vectors + top-k)."""
    from training.stage2 import predict_interests

    t0 = time.perf_counter()
    interests = predict_interests(model, tables, eval_set.histories, batch)
    vectors = model.item_vectors(tables.exact).float().cpu().numpy()
    topk = topk_from_interests(interests, vectors, eval_set.histories, k, batch_size=batch)
    seconds = time.perf_counter() - t0
    metrics = evaluate_interests(interests, vectors, eval_set.histories, eval_set.targets, batch_size=batch)
    return metrics, topk, seconds
