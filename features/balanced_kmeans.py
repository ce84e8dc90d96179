"""Balanced cosine k-means: the clustering that trains each layer of the residual codebook (features/codebook.py).

Balanced k-means (the paper does not name its variant; this one is ours): spherical-style k-means whose
assignment step is capacity constrained. Let ``m = N / C``. Every cluster may hold at most
``hi = max(ceil(m), floor(m * (1 + tol)))`` items and must hold at least ``lo = max(1, min(floor(m),
ceil(m * (1 - tol))))`` items, ``tol = CodebookConfig.balance_tolerance``. Items are assigned greedily by descending
cosine under the ``hi`` capacity (computed as the item-proposing stable matching, which for one shared score is
exactly the global greedy), then clusters under ``lo`` take their most similar items from clusters above ``lo``.
The final fit-time assignment of every layer therefore satisfies ``lo <= size <= hi`` *by construction*
(``fit_sizes_``); with ``tol = 0`` sizes are ``floor(m)`` or ``ceil(m)``. Centres are the (unnormalised) means of
their members' residuals, so the projection coefficients of members average about 1, which is what makes the
codes-only decode meaningful.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation [N, d] -> [N, d]; zero rows stay zero."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, EPS)


def cos_sims(res: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Cosine similarities [N, C] between residuals [N, d] and centres [C, d] (0 against zero vectors)."""
    return unit_rows(res) @ unit_rows(centres).T


def kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cosine k-means++ seeding: indices [k] of distinct rows of x [N, d], sampled with weight 1 - max cos."""
    xu = unit_rows(x)
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


def greedy_capacity_assign(sims: np.ndarray, hi: int) -> np.ndarray:
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


def fill_to_lower(sims: np.ndarray, assign: np.ndarray, lo: int) -> np.ndarray:
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


def balanced_kmeans(x: np.ndarray, k: int, iters: int, lo: int, hi: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Balanced cosine k-means on x [N, d] -> (centres [k, d] float32, fit-time assignment [N] int64)."""
    # k-means++ on a random subsample: seeding is memory bound (one pass per centre); 16 candidates per centre
    # are plenty to spread the seeds, and the balanced iterations do the rest.
    n_cand = min(x.shape[0], max(16 * k, 4096))
    cand = np.sort(rng.choice(x.shape[0], size=n_cand, replace=False)) if n_cand < x.shape[0] else np.arange(x.shape[0])
    centres = x[cand[kmeanspp(x[cand], k, rng)]].copy()
    assign = np.full(x.shape[0], -1, dtype=np.int64)
    d = x.shape[1]
    for _ in range(iters):
        sims = cos_sims(x, centres)
        new = fill_to_lower(sims, greedy_capacity_assign(sims, hi), lo)
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
