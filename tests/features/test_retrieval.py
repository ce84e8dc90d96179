"""Property tests of the K-interest merge and the exact per-interest top-n."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.retrieval import exact_topn_per_interest, merge_interest_candidates, topn_rows


@st.composite
def candidate_lists(draw):
    """Random [K, n] id/score lists with many duplicate ids and tied scores, plus padding ids."""
    n_int = draw(st.integers(1, 6))
    n = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 30))
    ids = np.array(draw(st.lists(st.integers(-1, n_items), min_size=n_int * n, max_size=n_int * n)))
    scores = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, -2.0]), min_size=n_int * n,
                                    max_size=n_int * n)))
    exclude = draw(st.lists(st.integers(0, n_items), max_size=5))
    mask = np.array(draw(st.lists(st.booleans(), min_size=n_int, max_size=n_int)))
    k = draw(st.integers(0, 15))
    return ids.reshape(n_int, n), scores.reshape(n_int, n), exclude, mask, k


def _best(ids, scores, exclude, mask):
    """Reference: dict item → (max score, lowest interest with that score)."""
    best: dict[int, tuple[float, int]] = {}
    for i in range(ids.shape[0]):
        if not mask[i]:
            continue
        for item, s in zip(ids[i], scores[i]):
            if item <= 0 or item in exclude:
                continue
            if item not in best or s > best[item][0]:
                best[item] = (s, i)
    return best


@settings(max_examples=300, deadline=None)
@given(candidate_lists())
def test_merge_matches_reference(case) -> None:
    ids, scores, exclude, mask, k = case
    out = merge_interest_candidates(ids, scores, k, exclude=exclude, interest_mask=mask)
    best = _best(ids, scores, set(exclude), mask)
    expected = sorted(best, key=lambda i: (-best[i][0], i))[:k]
    assert out.item_ids.tolist() == expected
    assert len(set(out.item_ids.tolist())) == len(out)  # no duplicates
    assert not set(out.item_ids.tolist()) & set(exclude)  # excluded never returned
    assert out.scores.tolist() == [best[i][0] for i in expected]
    assert out.interest.tolist() == [best[i][1] for i in expected]


@settings(max_examples=200, deadline=None)
@given(candidate_lists(), st.randoms(use_true_random=False))
def test_merge_is_deterministic_under_input_permutation(case, rnd) -> None:
    ids, scores, exclude, mask, k = case
    perm = np.array(rnd.sample(range(ids.shape[1]), ids.shape[1]))
    a = merge_interest_candidates(ids, scores, k, exclude=exclude, interest_mask=mask)
    b = merge_interest_candidates(ids[:, perm], scores[:, perm], k, exclude=np.array(exclude, dtype=np.int64),
                                  interest_mask=mask)
    assert a.item_ids.tolist() == b.item_ids.tolist()
    assert a.scores.tolist() == b.scores.tolist() and a.interest.tolist() == b.interest.tolist()


@settings(max_examples=200, deadline=None)
@given(candidate_lists())
def test_masked_interests_contribute_nothing(case) -> None:
    ids, scores, exclude, mask, k = case
    out = merge_interest_candidates(ids, scores, k, exclude=exclude, interest_mask=mask)
    kept = np.flatnonzero(mask)
    alone = merge_interest_candidates(ids[kept], scores[kept], k, exclude=exclude)
    assert out.item_ids.tolist() == alone.item_ids.tolist()
    assert set(out.interest.tolist()) <= set(kept.tolist())
    if not mask.any():
        assert len(out) == 0


@settings(max_examples=300, deadline=None)
@given(candidate_lists(), st.data())
def test_quotas_are_guaranteed_minimums(case, data) -> None:
    ids, scores, exclude, mask, k = case
    n_int = ids.shape[0]
    quotas = data.draw(st.lists(st.integers(0, 3), min_size=n_int, max_size=n_int))
    budget = sum(q for q, m in zip(quotas, mask) if m)
    if budget > k:
        with pytest.raises(ValueError, match="exceeds"):
            merge_interest_candidates(ids, scores, k, exclude=exclude, quotas=quotas, interest_mask=mask)
        return
    out = merge_interest_candidates(ids, scores, k, exclude=exclude, quotas=quotas, interest_mask=mask)
    got = out.item_ids.tolist()
    assert len(got) == len(set(got)) and len(got) <= k and not set(got) & set(exclude)
    best = _best(ids, scores, set(exclude), mask)
    assert len(got) == min(k, len(best))
    forced: set[int] = set()
    for i in range(n_int):  # interest i's own top quotas[i] items are all present
        if not mask[i] or quotas[i] == 0:
            continue
        own = _best(ids[i : i + 1], scores[i : i + 1], set(exclude), [True])
        top_own = sorted(own, key=lambda x: (-own[x][0], x))[: quotas[i]]
        assert set(top_own) <= set(got)
        forced |= set(top_own)
    # The output stays ordered by merged score (then id), like an unquoted merge.
    key = lambda x: (-best[x][0], x)  # noqa: E731
    assert got == sorted(got, key=key)
    # Non-quota slots hold the best remaining items: nothing left out ranks above any of them.
    free = [x for x in got if x not in forced]
    left_out = [x for x in best if x not in got]
    if free and left_out:
        assert max(key(x) for x in free) < min(key(x) for x in left_out)


def test_quota_pulls_in_a_weak_interest() -> None:
    ids = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.2, 0.1, 0.05, 0.0]])
    plain = merge_interest_candidates(ids, scores, 3)
    assert plain.item_ids.tolist() == [1, 2, 3]
    quota = merge_interest_candidates(ids, scores, 3, quotas=[0, 1])
    assert quota.item_ids.tolist() == [1, 2, 9] and quota.interest.tolist() == [0, 0, 1]


def test_bad_arguments() -> None:
    ids = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(ValueError):
        merge_interest_candidates(ids, np.ones((2, 2)), 3)
    with pytest.raises(ValueError):
        merge_interest_candidates(ids, np.ones((2, 3)), 3, interest_mask=[True])
    with pytest.raises(ValueError):
        merge_interest_candidates(ids, np.ones((2, 3)), 3, quotas=[1])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(2, 60), st.integers(1, 70), st.integers(0, 2**31 - 1))
def test_exact_topn_matches_full_sort(n_int, n_items, n, seed) -> None:
    rng = np.random.default_rng(seed)
    # Coarse values force plenty of ties, including at the top-n cut-off.
    interests = rng.integers(-2, 3, size=(n_int, 3)).astype(np.float64)
    items = rng.integers(-2, 3, size=(n_items + 1, 3)).astype(np.float64)
    exclude = set(rng.integers(0, n_items + 1, size=3).tolist()) | {0}
    ids, top = exact_topn_per_interest(interests, items, n, exclude=exclude)
    full = interests @ items.T
    want_n = min(n, n_items + 1 - len(exclude))
    assert ids.shape == (n_int, want_n) == top.shape
    for i in range(n_int):
        ref = sorted((j for j in range(n_items + 1) if j not in exclude), key=lambda j: (-full[i, j], j))
        assert ids[i].tolist() == ref[:want_n]
        assert np.array_equal(top[i], full[i, ids[i]])


def test_topn_rows_is_fast_enough_for_serving_sizes() -> None:
    rng = np.random.default_rng(0)
    ids, scores = topn_rows(rng.normal(size=(8, 1000)), 200)
    out = merge_interest_candidates(ids, scores, 100, exclude=ids[0, :50])
    assert len(out) == 100 and not set(out.item_ids.tolist()) & set(ids[0, :50].tolist())
