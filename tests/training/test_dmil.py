"""DMIL: grouping, Hungarian balance (every query gets a group), loss and masking."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.dmil import cosine_kmeans, dmil_loss, match_targets_to_queries


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_cosine_kmeans_separates_planted_directions():
    rng = np.random.default_rng(0)
    axes = np.eye(8)[:3]
    x = unit(np.repeat(axes, 4, axis=0) + 0.05 * rng.normal(size=(12, 8)))
    labels = cosine_kmeans(x, 3, rng=rng)
    for g in range(3):  # the 4 noisy copies of one axis land in one group
        assert len(set(labels[g * 4:(g + 1) * 4])) == 1
    assert len(set(labels)) == 3


def test_fewer_targets_than_queries_gives_each_target_its_own_group():
    assert cosine_kmeans(unit(np.random.default_rng(1).normal(size=(2, 5))), 3).tolist() == [0, 1]


def test_hungarian_assignment_is_one_to_one_and_balanced():
    """With W ≥ K, every query gets exactly one group: no query starves, even when one query
    is closest to every target (the collapse case the balancing exists for)."""
    rng = np.random.default_rng(0)
    k, w, d, b = 3, 9, 16, 32
    axes = unit(rng.normal(size=(k, d)))
    targets = unit(np.repeat(axes, w // k, axis=0)[None].repeat(b, 0) + 0.05 * rng.normal(size=(b, w, d)))
    dominant = unit(axes.sum(0))  # query 0 is the nearest query for *all* targets
    others = [unit(-dominant + 0.3 * unit(rng.normal(size=d))) for _ in range(2)]  # point away from all targets
    interests = np.stack([dominant, *others])[None].repeat(b, 0)
    assert ((targets @ interests[0].T).argmax(-1) == 0).all()  # [B, W, K]
    assignment = match_targets_to_queries(interests, targets, np.ones((b, w), bool), rng)
    for row in assignment:
        assert sorted(set(row.tolist())) == [0, 1, 2]
        # targets of one planted group share a query
        assert all(len(set(row[g * 3:(g + 1) * 3])) == 1 for g in range(k))


def test_assignment_marks_padding():
    rng = np.random.default_rng(0)
    mask = np.array([[True, True, False, False]])
    a = match_targets_to_queries(unit(rng.normal(size=(1, 3, 4))), unit(rng.normal(size=(1, 4, 4))), mask, rng)
    assert a[0, 2:].tolist() == [-1, -1] and (a[0, :2] >= 0).all() and a[0, 0] != a[0, 1]


def _loss_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    interests = F.normalize(torch.randn(2, 3, 8, generator=g), dim=-1)
    targets = F.normalize(torch.randn(2, 4, 8, generator=g), dim=-1)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = ids > 0
    assignment = torch.tensor([[0, 1, 2, 0], [1, 2, -1, -1]])
    neg_ids = torch.arange(10, 30)
    negs = F.normalize(torch.randn(20, 8, generator=g), dim=-1)
    return interests, targets, ids, mask, assignment, negs, neg_ids


def test_loss_rewards_matched_query_and_temperature_starts_at_007():
    interests, targets, ids, mask, assignment, negs, neg_ids = _loss_inputs()
    scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    loss, stats = dmil_loss(interests, targets, ids, mask, assignment, negs, neg_ids, scale)
    assert abs(stats.temperature - 0.07) < 1e-6
    # Put each target exactly on its matched query: the loss must drop.
    aligned = interests.clone()
    aligned[0, 0], aligned[0, 1], aligned[0, 2] = targets[0, 0], targets[0, 1], targets[0, 2]
    aligned[1, 1], aligned[1, 2] = targets[1, 0], targets[1, 1]
    better, _ = dmil_loss(aligned, targets, ids, mask, assignment, negs, neg_ids, scale)
    assert float(better) < float(loss)
    loss.backward()
    assert torch.isfinite(scale.grad)
    assert np.allclose(stats.query_share, [1 / 3] * 3)  # valid targets per query: 2, 2, 2


def test_false_negatives_are_masked():
    """One target; a candidate that is a near-copy of it (cos > 0.98) or the same item id is not a negative."""
    interests, targets, _, _, _, negs, neg_ids = _loss_inputs()
    ids = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    mask, assignment = ids > 0, torch.tensor([[0, -1, -1, -1], [-1, -1, -1, -1]])
    interests = interests.clone()
    interests[0, 0] = targets[0, 0]  # the positive dominates, so one extra hard negative is visible
    scale = torch.tensor(float(np.log(1 / 0.07)))
    base, _ = dmil_loss(interests, targets, ids, mask, assignment, negs, neg_ids, scale)
    near_copy = F.normalize(targets[0, 0] + 0.01 * negs[0], dim=-1)
    dup_vecs = torch.cat([negs, near_copy[None], negs[:1]])
    dup_ids = torch.cat([neg_ids, torch.tensor([99, 1])])  # 99: near-copy; 1: the target's own id
    masked, _ = dmil_loss(interests, targets, ids, mask, assignment, dup_vecs, dup_ids, scale)
    assert torch.allclose(base, masked, atol=1e-5)
    unmasked, _ = dmil_loss(interests, targets, ids, mask, assignment, dup_vecs, dup_ids, scale,
                            false_negative_threshold=1.5)
    assert float(unmasked) > float(base) + 1e-4


def test_next_item_loss_targets_the_following_item_and_skips_padding():
    from training.dmil import next_item_loss

    catalogue = unit(torch.eye(6)[:, :6] + 0.0)  # item i ↔ basis vector i (row 0 = padding)
    recent_ids = torch.tensor([[0, 2, 3]])  # left padding, then items 2, 3; the first target is 4
    first_target = torch.tensor([4])
    good = catalogue[[1, 3, 4]][None]  # position 0 is padding (ignored); 2 → 3, 3 → 4
    bad = catalogue[[1, 5, 5]][None]
    scale = torch.tensor(float(np.log(20.0)))
    assert next_item_loss(good, recent_ids, first_target, catalogue, scale) < \
        next_item_loss(bad, recent_ids, first_target, catalogue, scale)
    # Only the padding position differs: the loss must not change.
    other_pad = good.clone()
    other_pad[0, 0] = catalogue[5]
    assert torch.allclose(next_item_loss(good, recent_ids, first_target, catalogue, scale),
                          next_item_loss(other_pad, recent_ids, first_target, catalogue, scale))


def test_window_of_10_with_3_queries_clusters_and_matches_each_query_to_its_nearest_cluster():
    """W = 10 > K = 3 (the paper's setting; the bench's W = 3 never clusters): k-means returns K non-empty groups
    that are the planted clusters, and the Hungarian matching maps them one-to-one onto the queries, each
    cluster to the query that points at it, also when padding leaves fewer (but still > K) targets."""
    rng = np.random.default_rng(0)
    k, w, d, b = 3, 10, 16, 16
    planted = np.zeros((b, w), np.int64)
    targets = np.zeros((b, w, d))
    interests = np.zeros((b, k, d))
    query_of_cluster = np.zeros((b, k), np.int64)
    mask = np.ones((b, w), bool)
    mask[1::2, -2:] = False  # every other sample: 8 valid targets
    for i in range(b):
        axes = unit(rng.normal(size=(k, d)))  # well-separated (random directions in 16-d) clusters
        planted[i] = rng.permutation(np.repeat(np.arange(k), [4, 3, 3]))
        targets[i] = unit(axes[planted[i]] + 0.05 * rng.normal(size=(w, d)))
        query_of_cluster[i] = rng.permutation(k)  # query q points at cluster c when query_of_cluster[c] == q
        interests[i, query_of_cluster[i]] = unit(axes + 0.3 * rng.normal(size=(k, d)))
        valid = np.flatnonzero(mask[i])
        labels = cosine_kmeans(targets[i, valid], k, rng=rng)
        assert sorted(np.bincount(labels, minlength=k) > 0) == [True] * k  # K non-empty groups
        # the groups are the planted clusters (same group ⇔ same cluster)
        same_group = labels[:, None] == labels[None, :]
        assert (same_group == (planted[i, valid][:, None] == planted[i, valid][None, :])).all()
    assignment = match_targets_to_queries(interests, targets, mask, rng)
    for i in range(b):
        valid = mask[i]
        assert (assignment[i, valid] == query_of_cluster[i][planted[i, valid]]).all()
        assert sorted(set(assignment[i, valid].tolist())) == [0, 1, 2]  # a permutation: every query gets a cluster
        assert (assignment[i, ~valid] == -1).all()


def test_nearest_routing_sends_each_target_to_its_best_query_without_balancing():
    """ComiRec's argmax routing (hybrid.interest_routing=nearest): unlike the Hungarian matching above, a query
    that is nearest to every target takes them all, and padding stays -1."""
    from training.dmil import route_targets

    rng = np.random.default_rng(0)
    axes = unit(rng.normal(size=(3, 16)))
    interests = axes[None].repeat(2, 0)  # query q points at axis q
    planted = np.array([[0, 0, 2, 1], [1, 1, 1, 1]])
    targets = unit(axes[planted] + 0.05 * rng.normal(size=(2, 4, 16)))
    mask = np.array([[True, True, True, False], [True, True, True, True]])
    assignment = route_targets(interests, targets, mask, "nearest")
    assert assignment.tolist() == [[0, 0, 2, -1], [1, 1, 1, 1]]
    assert sorted(set(route_targets(interests, targets, mask, "balanced", rng)[1].tolist())) == [0, 1, 2]
    with pytest.raises(ValueError, match="interest_routing"):
        route_targets(interests, targets, mask, "greedy")


def test_max_merge_loss_scores_every_candidate_by_its_best_interest():
    """With one interest it is DMIL's loss; a duplicated interest changes nothing (the max is the same); and an
    interest that scores a negative high costs as much as it would in the merged ranking, which per-query DMIL
    does not see when that interest is not the target's matched query."""
    from training.dmil import max_merge_loss

    interests, targets, ids, mask, _, negs, neg_ids = _loss_inputs()
    scale = torch.tensor(float(np.log(1 / 0.07)))
    one = interests[:, :1]
    zeros = torch.zeros_like(ids)
    assert torch.allclose(max_merge_loss(one, targets, ids, mask, negs, neg_ids, scale),
                          dmil_loss(one, targets, ids, mask, zeros, negs, neg_ids, scale)[0])
    assert torch.allclose(max_merge_loss(one.repeat(1, 2, 1), targets, ids, mask, negs, neg_ids, scale),
                          max_merge_loss(one, targets, ids, mask, negs, neg_ids, scale))
    # A second interest pointing exactly at a negative item: the merged score ranks that item first.
    spoiler = torch.cat([one, negs[:1][None].repeat(2, 1, 1)], 1)
    assert float(max_merge_loss(spoiler, targets, ids, mask, negs, neg_ids, scale)) > \
        float(max_merge_loss(one, targets, ids, mask, negs, neg_ids, scale)) + 0.1
    assert torch.allclose(dmil_loss(spoiler, targets, ids, mask, zeros, negs, neg_ids, scale)[0],
                          dmil_loss(one, targets, ids, mask, zeros, negs, neg_ids, scale)[0])


def test_soft_max_merge_tends_to_the_hard_max_and_teaches_every_interest():
    """τ · logsumexp(cos / τ) → max as τ → 0; at τ > 0 an interest that is not the best still gets gradient."""
    from training.dmil import max_merge_loss

    interests, targets, ids, mask, _, negs, neg_ids = _loss_inputs()
    scale = torch.tensor(float(np.log(1 / 0.07)))
    hard = max_merge_loss(interests, targets, ids, mask, negs, neg_ids, scale)
    near = max_merge_loss(interests, targets, ids, mask, negs, neg_ids, scale, softness=1e-4)
    assert torch.allclose(hard, near, atol=1e-3)
    # Every item gets a constant extra coordinate 1; the second interest is the first one shifted down by 0.5 there,
    # so it scores every item 0.5 below the first: under the hard max it wins nothing and learns nothing.
    def lift(x, value):
        return torch.cat([x, torch.full((*x.shape[:-1], 1), value)], -1)

    first = lift(interests[:, :1], 0.0)
    shifted = torch.cat([first, first + torch.cat([torch.zeros(8), torch.tensor([-0.5])])], 1)
    targets, negs = lift(targets, 1.0), lift(negs, 1.0)
    loser = shifted.clone().requires_grad_(True)
    max_merge_loss(loser, targets, ids, mask, negs, neg_ids, scale).backward()
    hard_grad = loser.grad[:, 1].abs().sum()
    soft = shifted.clone().requires_grad_(True)
    max_merge_loss(soft, targets, ids, mask, negs, neg_ids, scale, softness=1.0).backward()
    assert float(hard_grad) == 0.0 and float(soft.grad[:, 1].abs().sum()) > 0
