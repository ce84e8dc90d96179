"""ILD@k and distinct clusters@k on a hand-computed case."""
from __future__ import annotations

import numpy as np
import pytest

from bench.diversity import distinct_clusters, diversity, intra_list_distance

# item 0 = padding; 1 → (1, 0), 2 → (0, 1), 3 → (2, 0) (same direction as 1), 4 → (-1, 0)
EMB = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [-1.0, 0.0]])
LABELS = np.array([0, 7, 0, 8, 7])  # first-layer codes; item 2's code 0 must not be mistaken for padding
TOPK = np.array([[1, 2, 3], [1, 4, 0], [2, 0, 0]])


def test_ild_hand_computed():
    # user 0: pairs (1,2) 1 − 0, (1,3) 1 − 1, (2,3) 1 − 0 → 2/3; user 1: (1,4) 1 − (−1) = 2; user 2: no pair (left out)
    assert intra_list_distance(TOPK, EMB, k=3) == pytest.approx((2 / 3 + 2) / 2)
    assert intra_list_distance(TOPK, EMB, k=2) == pytest.approx((1 + 2) / 2)  # only the first k items count
    assert intra_list_distance(TOPK, EMB, k=3, chunk=1) == pytest.approx((2 / 3 + 2) / 2)  # chunking is exact


def test_distinct_clusters_hand_computed():
    # user 0: {7, 0, 8} = 3; user 1: {7, 7} = 1; user 2: {0} = 1 (padding not counted)
    assert distinct_clusters(TOPK, LABELS, k=3) == pytest.approx(5 / 3)
    assert distinct_clusters(TOPK, LABELS, k=2) == pytest.approx((2 + 1 + 1) / 3)
    assert distinct_clusters(np.zeros((2, 3), np.int64), LABELS, k=3) == 0.0


def test_diversity_uses_the_first_codebook_layer():
    codes = np.stack([LABELS, np.arange(5)], axis=1)  # second layer all distinct: must be ignored
    out = diversity(TOPK, EMB, codes, k=3)
    assert out == {"ILD@3": pytest.approx(4 / 3), "clusters@3": pytest.approx(5 / 3)}
    assert diversity(TOPK, None, None, k=3) == {"ILD@3": None, "clusters@3": None}
