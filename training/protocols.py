"""The two evaluation protocols a run trains and tests under (``train.protocol``), in one place.

* ``leave_one_out`` (default): the last item of each user is the test target, the one before it validates
  (:func:`training.data.leave_one_out`); next-item metrics, early stopping on validation NDCG@10.
* ``window``: the last W = ``train.eval_window`` items are the test targets, the W before them validate
  (:func:`training.datasets.window.window_split`); set metrics, interest coverage and ILD
  (:mod:`training.evaluate_window`), early stopping on validation Recall@50. HyMiRec's lists are scored with both
  the max merge and the per-interest quota merge of :func:`core.retrieval.merge_interest_candidates`.

Every model of a run is split, validated and tested by the same protocol; the functions here are what differs.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import numpy as np

from training.datasets.window import WindowSet
from training.evaluate import eval_subset, topk_from_interests
from training.evaluate_window import WINDOW_KS, history_without_targets, window_metrics_from_topk

PROTOCOLS = ("leave_one_out", "window")
VALID_METRIC = {"leave_one_out": "NDCG@10", "window": "Recall@50"}


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise ValueError(f"train.protocol must be one of {PROTOCOLS}, got {name!r}")
    return name


def make_split(data, protocol: str, window: int):
    """The run's split: leave-one-out, or the window split with ``window`` targets per user and phase."""
    from training.data import leave_one_out
    from training.datasets.window import window_split

    return leave_one_out(data) if check_protocol(protocol) == "leave_one_out" else window_split(data, window)


def is_window(eval_set) -> bool:
    return isinstance(eval_set, WindowSet)


def valid_metric(eval_set) -> str:
    """The validation metric early stopping follows for this evaluation set."""
    return VALID_METRIC["window" if is_window(eval_set) else "leave_one_out"]


def next_item_view(eval_set):
    """A single-target view of a window set (history → the window's first item), for models whose own training
    loop validates next-item prediction (our SASRec); a leave-one-out set is returned as it is."""
    if not is_window(eval_set):
        return eval_set
    return SimpleNamespace(histories=eval_set.histories, users=eval_set.users,
                           targets=np.asarray([t[0] for t in eval_set.targets], dtype=np.int64))


def subsample(eval_set, max_users: int | None, seed: int = 0):
    """At most ``max_users`` users of a window set: the same subset rule as leave-one-out validation."""
    keep = eval_subset(len(eval_set), max_users, seed)
    if keep is None:
        return eval_set
    keep = np.sort(keep)
    return WindowSet(eval_set.users[keep], [eval_set.histories[i] for i in keep], [eval_set.targets[i] for i in keep])


def interest_window_metrics(interests: np.ndarray, item_vectors: np.ndarray, eval_set: WindowSet, labels=None,
                            ild_vectors: np.ndarray | None = None, merge: str = "max",
                            ks: Sequence[int] = WINDOW_KS, batch_size: int = 256) -> tuple[dict, np.ndarray]:
    """Window metrics of multi-interest users through the serving merge → (metrics, top-``max(ks)`` lists).

    ``merge="max"``: one list of ``max(ks)`` items by max-over-interests score. ``merge="quota"``: for each
    cut-off k its own merge with :func:`core.retrieval.equal_quotas` (each interest guaranteed k // K slots of the
    top k), as serving returns k items; the returned lists are the ``max(ks)`` one.
    """
    masked = history_without_targets(eval_set.histories, eval_set.targets)
    n_interests = interests.shape[1]
    if merge == "max" or n_interests == 1:
        topk = topk_from_interests(interests, item_vectors, masked, max(ks), None, batch_size)
        return window_metrics_from_topk(topk, eval_set.targets, labels, ild_vectors, ks), topk
    if merge != "quota":
        raise ValueError(f"merge must be 'max' or 'quota', got {merge!r}")
    metrics: dict = {}
    topk = None
    for k in ks:
        topk = topk_from_interests(interests, item_vectors, masked, k, None, batch_size, quota_merge=True)
        part = window_metrics_from_topk(topk, eval_set.targets, labels, ild_vectors, [k])
        metrics.update(part)
    return metrics, topk


def list_window_metrics(topk: np.ndarray, eval_set: WindowSet, labels=None,
                        ild_vectors: np.ndarray | None = None, ks: Sequence[int] = WINDOW_KS) -> dict:
    """Window metrics of given lists (popularity, SASRec), built with :func:`masked_histories` masked."""
    return window_metrics_from_topk(topk, eval_set.targets, labels, ild_vectors, ks)


def masked_histories(eval_set) -> list[np.ndarray]:
    """What a list-producing baseline masks: the history, except (window protocol) the targets themselves."""
    if is_window(eval_set):
        return history_without_targets(eval_set.histories, eval_set.targets)
    return list(eval_set.histories)


def sasrec_window_test(model, eval_set: WindowSet, k: int = 100, chunk: int = 1024) -> tuple[dict, np.ndarray, float]:
    """Our SASRec on a window test set: top-``k`` lists (history masked except the targets), their window metrics
    (labels are added by :func:`window_report`) and the inference seconds."""
    import time

    from training.evaluate import topk_from_scores

    masked = masked_histories(eval_set)
    lists, seconds = [], 0.0
    for i in range(0, len(masked), chunk):
        t0 = time.perf_counter()
        lists.append(topk_from_scores(model.score(eval_set.histories[i:i + chunk]), masked[i:i + chunk], k))
        seconds += time.perf_counter() - t0
    topk = np.concatenate(lists) if lists else np.zeros((0, k), np.int64)
    return list_window_metrics(topk, eval_set), topk, seconds


def window_labels(state):
    """The interest labels of a window-protocol run (training/interest_labels.py: planted topics, item-file
    categories such as genres, else first-layer codebook codes), recorded in its metrics."""
    from training.interest_labels import item_interest_labels

    labels = item_interest_labels(state.data, codebook=state.codes)
    state.metrics["interest_labels"] = {"source": labels.source, "labels": len(labels.names)}
    return labels


def hybrid_window_test(model, tables, eval_set: WindowSet, labels, ild_vectors: np.ndarray,
                       batch: int = 256) -> tuple[dict, dict, np.ndarray, float]:
    """HyMiRec on a window test set: interests once, then (max-merge metrics, quota-merge metrics, the max-merge
    top-100 lists, inference seconds of interests + item vectors + the max-merge lists)."""
    import time

    from training.stage2 import predict_interests

    t0 = time.perf_counter()
    interests = predict_interests(model, tables, eval_set.histories, batch)
    vectors = model.item_vectors(tables.exact).float().cpu().numpy()
    metrics, topk = interest_window_metrics(interests, vectors, eval_set, labels, ild_vectors, "max", batch_size=batch)
    seconds = time.perf_counter() - t0
    quota = interest_window_metrics(interests, vectors, eval_set, labels, ild_vectors, "quota", batch_size=batch)[0]
    return metrics, quota, topk, seconds


def rescore_baselines(state, labels) -> None:
    """Window protocol, once the labels exist (after the codebook): popularity's and SASRec's test lists scored
    again with interest coverage, and ILD over the stage-1 item embeddings (one table for every method)."""
    test, layout, m = state.split.test, state.layout, state.metrics
    for method, path in (("popularity", layout.topk_test_popularity), ("sasrec", layout.topk_test_sasrec)):
        if method in m and path.is_file():
            m[method]["test"] = list_window_metrics(np.load(path), test, labels.matrix, state.item_emb)
    h = m["hymirec"]
    state.log(f"[window] labels: {labels.source}; HyMiRec max merge Recall@50 {h['test']['Recall@50']:.4f} "
              f"Coverage@50 {h['test'].get('Coverage@50', float('nan')):.4f}; quota merge Recall@50 "
              f"{h['test_quota']['Recall@50']:.4f} Coverage@50 {h['test_quota'].get('Coverage@50', float('nan')):.4f}")
