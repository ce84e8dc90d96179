"""Window-protocol evaluation: a *set* of targets per user, interest coverage and diversity.

Sibling of :mod:`training.evaluate` (leave-one-out); multi-interest models are ranked by exactly the same
serving path, :func:`training.evaluate.topk_from_interests` → ``core.retrieval.merge_interest_candidates``
(score = max over the K interests), so what is measured is what serving returns.

Definitions, for a user with ranked list ``r`` (distinct ids, 0/-1 = padding) and distinct targets ``T``
(the window of :func:`training.data.window_split`; repeats inside the window count once):

* ``Recall@K = |r[:K] ∩ T| / |T|``; ``HR@K = 1 if r[:K] ∩ T ≠ ∅``;
* ``NDCG@K = DCG / IDCG`` with ``DCG = Σ_{i<K, r[i] ∈ T} 1 / log2(i + 2)`` (0-based i) and the set's ideal
  ``IDCG = Σ_{i < min(|T|, K)} 1 / log2(i + 2)``;
* ``Coverage@K = |I(T) ∩ I(r[:K])| / |I(T)|`` where ``I(S)`` = the union of the interest labels of the items
  in ``S`` (an item may have several: genres); users whose window has no labelled item are left out
  (``coverage_users`` counts the rest). ``Interests@K`` = mean ``|I(r[:K])|``; ``target_interests`` = mean
  ``|I(T)|``;
* ``ILD@K`` = mean over the list's unordered pairs of ``1 - cosine(v_i, v_j)`` on item *vectors* (not label
  Jaccard), averaged over users with ≥ 2 items. Compare methods with one shared vector table (``ild_vectors``,
  e.g. the stage-1 item embeddings), else each method's ILD is measured in its own space.

Masking: item 0 and the history are removed from the ranking, the targets never (a re-consumed item that is
both in the history and in the window stays rankable), as in leave-one-out.

Diversity at equal recall: a model can buy coverage by giving up accuracy, so :func:`at_equal_recall` reads
two methods' curves over K and reports one's coverage (or ILD) at the recall the other reached.

Example — how a trainer would call it on the validation window (not wired into ``training/train.py`` yet)::

    from training.data import window_split
    from training.evaluate_window import evaluate_window
    from training.interest_labels import item_interest_labels
    from training.stage2 import predict_interests

    split = window_split(data, window=10)
    labels = item_interest_labels(data, codebook=item_codes)   # item_codes [n_items+1, L]: only used without genres
    interests = predict_interests(model, tables, split.valid.histories)      # [U, K, d]
    vectors = model.item_vectors(tables.exact).float().cpu().numpy()         # [n_items+1, d]
    metrics = evaluate_window(interests, vectors, split.valid.histories, split.valid.targets, labels,
                              ild_vectors=item_embeddings)
    log({f"window/{name}": value for name, value in metrics.items()})  # names clash with leave-one-out's
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from training.evaluate import _to_numpy, topk_from_interests
from training.interest_labels import ItemInterestLabels, as_label_matrix

WINDOW_KS: tuple[int, ...] = (10, 20, 50, 100)


def _target_matrix(target_sets: Sequence[np.ndarray], n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct targets per user → ``(int64 [U, W_max]`` padded with -1, ``int64 [U]`` set sizes)."""
    if len(target_sets) != n_users:
        raise ValueError(f"{len(target_sets)} target sets for {n_users} ranked lists")
    sets = [np.unique(np.asarray(t, dtype=np.int64)) for t in target_sets]
    for u, s in enumerate(sets):
        if len(s) == 0 or s[0] < 1:
            raise ValueError(f"user {u}: target set {s.tolist()} must be non-empty item ids >= 1")
    sizes = np.array([len(s) for s in sets], dtype=np.int64)
    out = np.full((n_users, int(sizes.max(initial=0))), -1, dtype=np.int64)
    for u, s in enumerate(sets):
        out[u, : len(s)] = s
    return out, sizes


def _check_topk(topk: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    topk = np.asarray(topk, dtype=np.int64)
    if topk.ndim != 2:
        raise ValueError(f"topk must be [U, maxK], got shape {topk.shape}")
    if not ks or min(ks) < 1 or max(ks) > topk.shape[1]:
        raise ValueError(f"ks {tuple(ks)} must be >= 1 and <= the list length {topk.shape[1]}")
    s = np.sort(topk, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] > 0)
    if dup.any():
        u = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"user {u}: ranked list repeats an item (lists must hold distinct ids)")
    return topk


def window_set_metrics(topk: np.ndarray, target_sets: Sequence[np.ndarray],
                       ks: Sequence[int] = WINDOW_KS, chunk: int = 2048) -> dict[str, float]:
    """``topk int [U, maxK]`` vs per-user target sets → ``{"Recall@K", "NDCG@K", "HR@K", "users"}`` (module doc)."""
    topk = _check_topk(topk, ks)
    targets, sizes = _target_matrix(target_sets, len(topk))
    n_users, kmax = len(topk), max(ks)
    disc = 1.0 / np.log2(np.arange(kmax) + 2.0)
    idcg_at = np.cumsum(disc)  # idcg_at[n - 1] = ideal DCG of n relevant items
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("Recall", "NDCG", "HR")}
    for c0 in range(0, n_users, chunk):
        top, tgt, size = topk[c0:c0 + chunk, :kmax], targets[c0:c0 + chunk], sizes[c0:c0 + chunk]
        match = (top[:, :, None] == tgt[:, None, :]) & (top > 0)[:, :, None]  # [B, kmax, W]
        for k in ks:
            m = match[:, :k]
            hit_pos = m.any(axis=2)  # [B, k]
            sums[f"Recall@{k}"] += float((m.any(axis=1).sum(axis=1) / size).sum())
            sums[f"NDCG@{k}"] += float(((hit_pos * disc[:k]).sum(axis=1) / idcg_at[np.minimum(size, k) - 1]).sum())
            sums[f"HR@{k}"] += float(hit_pos.any(axis=1).sum())
    out: dict[str, float] = {"users": int(n_users)}
    out.update({name: (v / n_users if n_users else 0.0) for name, v in sums.items()})
    return out


def interest_coverage(topk: np.ndarray, target_sets: Sequence[np.ndarray], item_labels,
                      ks: Sequence[int] = WINDOW_KS) -> dict[str, float]:
    """``{"Coverage@K", "Interests@K", "target_interests", "coverage_users"}`` (definitions: module doc).

    Args:
        topk: ``int [U, maxK]`` ranked lists.
        target_sets: per user, ``int [W_u]`` target items.
        item_labels: labels of items ``0..n_items`` in any form :func:`training.interest_labels.as_label_matrix`
            accepts (``ItemInterestLabels``, ``bool [n_items+1, L]``, 1-D labels, list of id arrays, scipy CSR).
    """
    topk = _check_topk(topk, ks)
    targets, _ = _target_matrix(target_sets, len(topk))
    if isinstance(item_labels, ItemInterestLabels):
        labels = item_labels.matrix
    else:  # the number of rows is only known from a matrix/array; per-item lists give it by their length
        labels = as_label_matrix(item_labels, item_labels.shape[0] if hasattr(item_labels, "shape")
                                 else len(item_labels))
    n_rows, n_labels = labels.shape
    for name, ids in (("topk", topk), ("target", targets)):
        if ids.max(initial=0) >= n_rows:
            raise ValueError(f"{name} item id {int(ids.max())} has no label row (labels cover 0..{n_rows - 1})")
    kmax = max(ks)
    # bound the [B, kmax, n_labels] gather to ~2^24 booleans
    chunk = max(1, (1 << 24) // max(1, kmax * n_labels))
    cov_sum = {k: 0.0 for k in ks}
    inter_sum = {k: 0.0 for k in ks}
    n_cov, t_sum = 0, 0.0
    for c0 in range(0, len(topk), chunk):
        top, tgt = topk[c0:c0 + chunk, :kmax], targets[c0:c0 + chunk]
        tgt_lab = (labels[np.maximum(tgt, 0)] & (tgt > 0)[:, :, None]).any(axis=1)  # [B, L]
        n_t = tgt_lab.sum(axis=1)
        has = n_t > 0
        n_cov += int(has.sum())
        t_sum += float(n_t.sum())
        top_lab = labels[np.maximum(top, 0)] & (top > 0)[:, :, None]  # [B, kmax, L]
        seen = np.logical_or.accumulate(top_lab, axis=1)  # seen[:, i] = labels of the first i+1 items
        for k in ks:
            lab_k = seen[:, k - 1]
            inter_sum[k] += float(lab_k.sum())
            cov_sum[k] += float(((lab_k & tgt_lab).sum(axis=1)[has] / n_t[has]).sum())
    n_users = len(topk)
    out: dict[str, float] = {"coverage_users": n_cov,
                             "target_interests": t_sum / n_users if n_users else 0.0}
    for k in ks:
        out[f"Coverage@{k}"] = cov_sum[k] / n_cov if n_cov else float("nan")
        out[f"Interests@{k}"] = inter_sum[k] / n_users if n_users else 0.0
    return out


def intra_list_distance(topk: np.ndarray, item_vectors: np.ndarray, ks: Sequence[int] = WINDOW_KS,
                        chunk: int = 256) -> dict[str, float]:
    """``{"ILD@K"}``: mean pairwise ``1 - cosine`` of the first K items' ``item_vectors [n_items+1, d]``.

    Padding entries (id ≤ 0) are left out of the pairs; users with fewer than 2 items are left out of the mean
    (NaN when no user has a pair). Zero vectors count as cosine 0 with everything.
    """
    topk = _check_topk(topk, ks)
    emb = _to_numpy(item_vectors).astype(np.float64)
    if emb.ndim != 2 or topk.max(initial=0) >= len(emb):
        raise ValueError(f"item_vectors {emb.shape} must be [n_items+1, d] covering every ranked id")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    total = {k: 0.0 for k in ks}
    users = {k: 0 for k in ks}
    for c0 in range(0, len(topk), chunk):
        ids = topk[c0:c0 + chunk, : max(ks)]
        valid = ids > 0
        vecs = unit[np.maximum(ids, 0)] * valid[..., None]  # [B, kmax, d], padding rows zeroed
        cos = vecs @ vecs.transpose(0, 2, 1)  # [B, kmax, kmax]
        for k in ks:
            n = valid[:, :k].sum(axis=1)
            pairs = n * (n - 1)  # ordered pairs i != j
            c = cos[:, :k, :k]
            off_diag = c.sum(axis=(1, 2)) - np.einsum("bii->b", c)
            keep = pairs > 0
            total[k] += float(np.sum(1.0 - off_diag[keep] / pairs[keep]))
            users[k] += int(keep.sum())
    return {f"ILD@{k}": (total[k] / users[k] if users[k] else float("nan")) for k in ks}


def window_metrics_from_topk(topk: np.ndarray, target_sets: Sequence[np.ndarray], item_labels=None,
                             ild_vectors: np.ndarray | None = None,
                             ks: Sequence[int] = WINDOW_KS) -> dict[str, float]:
    """All window metrics of given ranked lists ``topk int [U, maxK]`` (for score-based models and baselines:
    build the lists with the target *sets* unmasked, see :func:`history_without_targets`). Coverage needs
    ``item_labels``, ILD ``ild_vectors``; each is skipped when None."""
    out = window_set_metrics(topk, target_sets, ks)
    if item_labels is not None:
        out.update(interest_coverage(topk, target_sets, item_labels, ks))
    if ild_vectors is not None:
        out.update(intra_list_distance(topk, ild_vectors, ks))
    return out


def history_without_targets(histories: Sequence[np.ndarray],
                            target_sets: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What to mask per user: ``history − targets`` (targets are never masked) → list of ``int64 [≤ L_u]``."""
    if len(histories) != len(target_sets):
        raise ValueError(f"{len(histories)} histories for {len(target_sets)} target sets")
    out = []
    for h, t in zip(histories, target_sets):
        h = np.asarray(h, dtype=np.int64)
        out.append(h[~np.isin(h, np.asarray(t, dtype=np.int64))])
    return out


def evaluate_window(interests: np.ndarray, item_vectors: np.ndarray, histories: Sequence[np.ndarray],
                    target_sets: Sequence[np.ndarray], item_labels=None, ks: Sequence[int] = WINDOW_KS,
                    ild_vectors: np.ndarray | None = None, batch_size: int = 256) -> dict[str, float]:
    """Window metrics of a multi-interest model through the serving merge (example: module docstring).

    Args:
        interests: ``float [U, K, d]`` (numpy or torch); all-zero interests are padding and dropped.
        item_vectors: ``float [n_items+1, d]`` retrieval table (row 0 = padding).
        histories: per user ``int [L_u]`` the model's input items, masked from the ranking except the targets.
        target_sets: per user ``int [W_u]`` the window (e.g. ``window_split(data).test.targets``).
        item_labels: interest labels (any form :func:`interest_coverage` takes); None skips coverage.
        ks: cut-offs; the lists are ``max(ks)`` long.
        ild_vectors: ``float [n_items+1, d']`` table for ILD; defaults to ``item_vectors``.

    Returns:
        ``{"users", "Recall@K", "NDCG@K", "HR@K", "ILD@K"}`` and, with labels, ``{"Coverage@K", "Interests@K",
        "target_interests", "coverage_users"}`` for every K in ``ks``.
    """
    interests = _to_numpy(interests)
    if interests.ndim != 3 or len(interests) != len(histories):
        raise ValueError(f"interests {interests.shape} must be [U, K, d] with U = {len(histories)} histories")
    masked = history_without_targets(histories, target_sets)
    topk = topk_from_interests(interests, item_vectors, masked, max(ks), None, batch_size)
    return window_metrics_from_topk(topk, target_sets, item_labels,
                                    item_vectors if ild_vectors is None else ild_vectors, ks)


def at_equal_recall(metrics_a: dict[str, float], metrics_b: dict[str, float], ks: Sequence[int] = WINDOW_KS,
                    measure: str = "Coverage") -> list[dict[str, float | None]]:
    """Compare ``measure`` (``"Coverage"``, ``"ILD"``, ``"Interests"``) of two methods at equal recall.

    For each K of method A (recall ``r = A["Recall@K"]``), B's measure is read off B's curve
    ``(Recall@K', measure@K')`` over the same ``ks``, linearly interpolated at recall ``r`` (B's recall rises
    with K; where it is flat the smallest K' is used). ``b`` is None when ``r`` lies outside B's measured recall
    range: no extrapolation. Use several, close ``ks`` (e.g. ``range(10, 101, 10)``) for a finer curve.

    Returns:
        one row per K: ``{"K", "recall", "a": A's measure@K, "b": B's measure at recall r, "b_K": B's
        interpolated cut-off}``.
    """
    ks = sorted(ks)
    for name, m in (("metrics_a", metrics_a), ("metrics_b", metrics_b)):
        missing = [f"{p}@{k}" for k in ks for p in ("Recall", measure) if f"{p}@{k}" not in m]
        if missing:
            raise ValueError(f"{name} lacks {', '.join(missing)} (evaluate both methods with the same ks)")
    rb = np.array([metrics_b[f"Recall@{k}"] for k in ks], dtype=np.float64)
    mb = np.array([metrics_b[f"{measure}@{k}"] for k in ks], dtype=np.float64)
    rb_u, first = np.unique(rb, return_index=True)  # sorted, first K reaching each recall
    rows: list[dict[str, float | None]] = []
    for k in ks:
        r = float(metrics_a[f"Recall@{k}"])
        inside = rb_u[0] <= r <= rb_u[-1]
        rows.append({"K": k, "recall": r, "a": float(metrics_a[f"{measure}@{k}"]),
                     "b": float(np.interp(r, rb_u, mb[first])) if inside else None,
                     "b_K": float(np.interp(r, rb_u, np.asarray(ks, np.float64)[first])) if inside else None})
    return rows
