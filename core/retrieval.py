"""Merge of K per-interest candidate lists into one ranked list (shared by evaluation and serving).

Pure numpy; no I/O. Ordering everywhere is **score descending, then item id ascending**, so results
are deterministic whatever order the inputs come in.

Quota semantics (``quotas[k]`` = a *guaranteed minimum*): interest k's own best ``quotas[k]`` distinct
valid items (by its own score; excluded / padding ids skipped) are always in the output. Remaining
slots are filled by the best remaining items by merged (max-over-interests) score. An item claimed
by several interests' quotas takes one slot. The output is then sorted by merged score like any other
result, and ``interest`` always names the interest giving the item its max score (lowest index on ties).
``sum(quotas)`` must not exceed ``k``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class MergedCandidates:
    """Result of :func:`merge_interest_candidates` (``m <= k`` entries, fewer when candidates run out).

    Attributes:
        item_ids: ``int64 [m]`` distinct item indices, best first.
        scores: ``float [m]`` merged score = max over (unmasked) interests.
        interest: ``int64 [m]`` index of the interest giving the max score (lowest index on ties).
    """

    item_ids: np.ndarray
    scores: np.ndarray
    interest: np.ndarray

    def __len__(self) -> int:
        return len(self.item_ids)


def _as_id_array(exclude: Iterable[int] | np.ndarray | None) -> np.ndarray:
    if exclude is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(exclude, np.ndarray):
        return exclude.astype(np.int64, copy=False).ravel()
    return np.fromiter((int(x) for x in exclude), dtype=np.int64)


def merge_interest_candidates(
    ids: np.ndarray,
    scores: np.ndarray,
    k: int,
    exclude: Iterable[int] | np.ndarray | None = (),
    quotas: Sequence[int] | None = None,
    interest_mask: np.ndarray | Sequence[bool] | None = None,
) -> MergedCandidates:
    """Merge per-interest top lists into the top ``k`` distinct items.

    Args:
        ids: ``int64 [K, n]`` candidate item ids per interest; ids ``<= 0`` are ignored (0 is padding,
            negative ids are "no result" slots some ANN engines return).
        scores: ``float [K, n]`` score of each candidate for its interest; NaN entries are ignored.
        k: number of items wanted.
        exclude: item ids never returned (e.g. the user's history).
        quotas: optional ``[K]`` guaranteed minimum slots per interest (see module docstring).
        interest_mask: optional ``[K]`` bool, False drops that interest entirely (e.g. all-zero vectors).

    Returns:
        MergedCandidates with ``m = min(k, #distinct valid candidates)`` entries.
    """
    ids = np.asarray(ids)
    scores = np.asarray(scores)
    if ids.ndim != 2 or ids.shape != scores.shape:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must both be [K, n]")
    n_interests = ids.shape[0]
    if k < 0:
        raise ValueError("k must be >= 0")
    keep = np.ones(n_interests, dtype=bool)
    if interest_mask is not None:
        keep = np.asarray(interest_mask, dtype=bool)
        if keep.shape != (n_interests,):
            raise ValueError(f"interest_mask must have shape [{n_interests}]")
    if quotas is not None:
        quotas = [int(q) for q in quotas]
        if len(quotas) != n_interests or min(quotas, default=0) < 0:
            raise ValueError(f"quotas must be {n_interests} non-negative ints")
        if sum(q for q, m in zip(quotas, keep) if m) > k:
            raise ValueError(f"sum of quotas {sum(quotas)} exceeds k={k}")

    flat_interest = np.repeat(np.arange(n_interests, dtype=np.int64), ids.shape[1])
    flat_ids = ids.astype(np.int64, copy=False).ravel()
    flat_scores = scores.ravel()
    valid = np.repeat(keep, ids.shape[1]) & (flat_ids > 0) & ~np.isnan(flat_scores)
    excl = _as_id_array(exclude)
    if len(excl):
        valid &= ~np.isin(flat_ids, excl)
    f_ids, f_scores, f_int = flat_ids[valid], flat_scores[valid], flat_interest[valid]
    empty = MergedCandidates(np.zeros(0, np.int64), np.zeros(0, scores.dtype), np.zeros(0, np.int64))
    if len(f_ids) == 0 or k == 0:
        return empty

    # Best entry per item: sort by id, then score desc, then interest asc; keep the first of each id.
    order = np.lexsort((f_int, -f_scores, f_ids))
    s_ids = f_ids[order]
    first = np.ones(len(s_ids), dtype=bool)
    first[1:] = s_ids[1:] != s_ids[:-1]
    u_ids, u_scores, u_int = s_ids[first], f_scores[order][first], f_int[order][first]
    rank = np.lexsort((u_ids, -u_scores))  # global order: score desc, id asc

    if not quotas or not any(quotas):
        chosen = rank[:k]
    else:
        forced = _quota_items(f_ids, f_scores, f_int, quotas, keep)
        is_forced = np.isin(u_ids, forced)
        rest = rank[~is_forced[rank]][: max(0, k - int(is_forced.sum()))]
        chosen_mask = is_forced.copy()
        chosen_mask[rest] = True
        chosen = rank[chosen_mask[rank]]  # keep global order
    return MergedCandidates(u_ids[chosen], u_scores[chosen], u_int[chosen])


def equal_quotas(k: int, active: Sequence[bool]) -> list[int]:
    """The quota merge's shares: every active interest is guaranteed ``k // #active`` of the ``k`` slots, an
    inactive (padding) one none. Serving's Merge stage and the evaluator both take them from here."""
    active = [bool(a) for a in active]
    share = int(k) // max(1, sum(active))
    return [share if a else 0 for a in active]


def _quota_items(
    f_ids: np.ndarray, f_scores: np.ndarray, f_int: np.ndarray, quotas: list[int], keep: np.ndarray
) -> np.ndarray:
    """Union of every kept interest's top ``quotas[i]`` distinct valid items (by its own score)."""
    out = []
    for i, q in enumerate(quotas):
        if q <= 0 or not keep[i]:
            continue
        sel = f_int == i
        ids_i, sc_i = f_ids[sel], f_scores[sel]
        o = np.lexsort((ids_i, -sc_i))
        ids_sorted = ids_i[o]
        _, first_pos = np.unique(ids_sorted, return_index=True)  # first = best entry of each id
        out.append(ids_sorted[np.sort(first_pos)][:q])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def topn_rows(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``n`` columns of each row of ``scores [R, N]`` → ``(ids [R, n], scores [R, n])``.

    Ties are broken by column index ascending (also at the cut-off), so results are deterministic.
    Uses ``argpartition`` (O(N) per row) and sorts only the ``n`` survivors; rows whose cut-off value
    is tied beyond ``n`` fall back to a full stable sort.
    """
    scores = np.asarray(scores)
    n_rows, n_cols = scores.shape
    n = max(0, min(int(n), n_cols))
    if n == 0:
        return np.zeros((n_rows, 0), np.int64), np.zeros((n_rows, 0), scores.dtype)
    if n < n_cols:
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    o = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, o, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, o, axis=1)
    if n < n_cols:
        # Boundary ties: if more items share the cut-off score than fit, argpartition picked an
        # arbitrary subset of them; redo those rows with a full (score desc, id asc) sort.
        cut = top[:, -1:]
        bad = np.flatnonzero((scores >= cut).sum(axis=1) > n)
        for r in bad:
            full = np.lexsort((np.arange(n_cols), -scores[r]))[:n]
            ids[r], top[r] = full, scores[r, full]
    return ids, top


def exact_topn_per_interest(
    interests: np.ndarray,
    item_vectors: np.ndarray,
    n: int,
    exclude: Iterable[int] | np.ndarray | None = (0,),
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-interest top-``n`` by inner product (ground truth for ANN; used by the evaluator).

    Args:
        interests: ``float [K, d]`` interest vectors.
        item_vectors: ``float [N, d]`` item vectors (row = item index; row 0 is padding).
        n: list length per interest (capped at ``N - len(exclude)``).
        exclude: item ids never returned; default excludes the padding row 0.

    Returns:
        ``(ids int64 [K, n], scores [K, n])`` sorted by score desc, id asc. Scores must be finite.
    """
    scores = np.asarray(interests) @ np.asarray(item_vectors).T  # [K, N]
    excl = np.unique(_as_id_array(exclude))
    excl = excl[(excl >= 0) & (excl < scores.shape[1])]
    if len(excl):
        scores[:, excl] = -np.inf
    return topn_rows(scores, min(n, scores.shape[1] - len(excl)))
