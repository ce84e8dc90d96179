"""Evaluator: hand-computed metrics, history masking, multi-interest merge equivalence, popularity."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate import (
    evaluate_interests,
    evaluate_rankings,
    evaluate_scores,
    merge_metric_batches,
    popularity_topk,
    target_ranks_from_scores,
    topk_from_interests,
    topk_from_scores,
)


def test_rankings_hand_computed() -> None:
    topk = np.array([[7, 1, 2], [1, 2, 7], [1, 2, 3], [4, 7, 0]])
    targets = np.array([7, 7, 7, 7])  # ranks 0, 2, miss, 1
    m = evaluate_rankings(topk, targets, ks=(1, 2, 3))
    assert m["users"] == 4
    assert m["Recall@1"] == pytest.approx(1 / 4)
    assert m["Recall@2"] == pytest.approx(2 / 4)
    assert m["Recall@3"] == pytest.approx(3 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["NDCG@3"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(3)) / 4)  # rank 2 → 1/log2(4) = 0.5


def test_rank_zero_and_rank_two() -> None:
    assert evaluate_rankings(np.array([[5, 6, 7]]), np.array([5]), ks=(10,))["NDCG@10"] == 1.0
    assert evaluate_rankings(np.array([[5, 6, 7]]), np.array([7]), ks=(10,))["NDCG@10"] == 0.5


def test_scores_masking_changes_rank_and_target_is_never_masked() -> None:
    scores = np.array([[9.0, 0.1, 0.9, 0.5, 0.8]])  # item 0 (padding) must be ignored despite 9.0
    assert target_ranks_from_scores(scores, [np.array([], np.int64)], np.array([4])).tolist() == [1]
    assert target_ranks_from_scores(scores, [np.array([2])], np.array([4])).tolist() == [0]
    # Target inside the history (a re-consumption) stays rankable.
    assert target_ranks_from_scores(scores, [np.array([2, 4])], np.array([4])).tolist() == [0]
    m = evaluate_scores(scores, [np.array([2])], np.array([4]), ks=(1,))
    assert m["Recall@1"] == 1.0 and m["NDCG@1"] == 1.0


def test_score_ties_break_by_item_id() -> None:
    scores = np.array([[0.0, 1.0, 1.0, 1.0]])
    assert target_ranks_from_scores(scores, [np.zeros(0, np.int64)], np.array([3])).tolist() == [2]
    assert topk_from_scores(scores, [np.zeros(0, np.int64)], 3).tolist() == [[1, 2, 3]]


def test_topk_from_scores_agrees_with_exact_ranks() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 101))
    hist = [rng.integers(1, 101, size=rng.integers(0, 20)) for _ in range(50)]
    targets = rng.integers(1, 101, size=50)
    via_lists = evaluate_rankings(topk_from_scores(scores, hist, 100, targets), targets, ks=(5, 20))
    assert via_lists == evaluate_scores(scores, hist, targets, ks=(5, 20))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_interest_topk_equals_max_over_interests_full_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_int, dim, n_items = 64, 4, 8, 300
    interests = rng.normal(size=(n_users, n_int, dim)).astype(np.float32)
    items = rng.normal(size=(n_items + 1, dim)).astype(np.float32)
    items[0] = 0.0
    hist = [rng.integers(1, n_items + 1, size=rng.integers(0, 60)) for _ in range(n_users)]
    targets = rng.integers(1, n_items + 1, size=n_users)
    full = np.einsum("ukd,nd->ukn", interests, items).max(axis=1)  # [U, N+1]
    merged = topk_from_interests(interests, items, hist, 50, targets, batch_size=7)
    assert np.array_equal(merged, topk_from_scores(full, hist, 50, targets))
    assert evaluate_interests(interests, items, hist, targets, batch_size=16) == pytest.approx(
        evaluate_scores(full, hist, targets)
    )


def test_zero_interests_are_dropped() -> None:
    items = np.array([[0, 0], [1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    interests = np.array([[[1, 0], [0, 0]]], dtype=np.float32)  # second interest is padding
    top = topk_from_interests(interests, items, [np.zeros(0, np.int64)], 3)
    assert top.tolist() == [[1, 2, 3]]  # 2 and 3 come only from the full ranking of interest 0


def test_popularity_baseline() -> None:
    train = [np.array([1, 2, 2, 3]), np.array([2, 3, 4])]
    top = popularity_topk(train, n_items=5, histories=[np.array([2]), np.array([], np.int64)], k=3)
    assert top.tolist() == [[3, 1, 4], [2, 3, 1]]  # counts 2:3, 3:2, 1:1, 4:1 (ties by id), 5:0


def test_merge_metric_batches() -> None:
    a = {"users": 1, "Recall@10": 1.0}
    b = {"users": 3, "Recall@10": 0.0}
    assert merge_metric_batches([a, b]) == {"users": 4, "Recall@10": 0.25}


def test_subsample_eval_is_a_fixed_subset_and_a_no_op_when_small():
    from training.evaluate import subsample_eval

    histories = [np.array([i]) for i in range(10)]
    targets = np.arange(100, 110)
    h, t = subsample_eval(histories, targets, 4)
    assert len(h) == 4 and all(int(x[0]) + 100 == y for x, y in zip(h, t))
    h2, t2 = subsample_eval(histories, targets, 4)
    assert np.array_equal(t, t2)
    assert subsample_eval(histories, targets, None)[1] is targets
    assert len(subsample_eval(histories, targets, 50)[0]) == 10
