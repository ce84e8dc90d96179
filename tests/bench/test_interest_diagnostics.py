"""bench/interest_diagnostics.py re-scores a trained window run through its own model, tables, labels and test
users: with K = 1 the "mean interest" and "one interest alone" rows must reproduce the run's own test metrics."""
import json

import pytest

from bench.interest_diagnostics import diagnose
from training.config import RunConfig
from training.train import run_training

from tests.training.test_multi_interest import SMALL


@pytest.mark.slow
def test_k1_diagnostics_reproduce_the_runs_own_test_metrics(tmp_path):
    run_dir = tmp_path / "window" / "k1"
    config = RunConfig(dataset="synthetic", run_dir=str(run_dir), train_sasrec=False).override(
        SMALL + ["train.protocol=window", "hybrid.n_interests=1", "train.epochs=1"])
    own = run_training(config, progress=False, log=lambda *_: None)["hymirec"]["test"]
    diagnose(tmp_path, ["k1"])
    result = json.loads((run_dir / "interest_diagnostics.json").read_text())
    assert set(result) == {"mean interest", "one interest alone, mean of 1"}
    for metrics in result.values():
        for key in ("Recall@50", "NDCG@50", "Coverage@50", "ILD@50"):
            # 1e-5: with one torch thread the two passes sum in another order, and a near-tie can swap two items
            assert metrics[key] == pytest.approx(own[key], abs=1e-5), key


def test_soft_merge_ranks_by_max_plus_lambda_mean_with_history_masked():
    import numpy as np

    from bench.interest_diagnostics import soft_merge_topk

    vectors = np.array([[0, 0], [1, 0], [0, 1], [0.7, 0.7], [-1, 0]], np.float32)  # row 0: padding
    interests = np.array([[[1, 0], [0, 1]]], np.float32)  # one user, two interests
    # scores per item (1..4): interest 1 = (1, 0, .7, -1), interest 2 = (0, 1, .7, 0)
    # max: (1, 1, .7, 0); mean: (.5, .5, .7, -.5)
    assert soft_merge_topk(interests, vectors, [np.array([], np.int64)], 0.0, k=3)[0].tolist()[2] == 3
    # λ = 2: max + 2 mean = (2, 2, 2.1, -1): the item both interests like comes first
    assert soft_merge_topk(interests, vectors, [np.array([], np.int64)], 2.0, k=3)[0].tolist()[0] == 3
    # history masked, item 0 never returned
    top = soft_merge_topk(interests, vectors, [np.array([3])], 2.0, k=3)[0].tolist()
    assert 3 not in top and 0 not in top and sorted(top) == [1, 2, 4]


def test_steered_interests_tilt_the_one_interest_toward_each_centre():
    import numpy as np

    from bench.interest_diagnostics import steered_interests

    interest = np.array([[[1.0, 0.0]]], np.float32)  # one user, K = 1
    centres = np.array([[[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]]], np.float32)  # three history clusters
    tilted = steered_interests(interest, centres, alpha=1.0, keep=False)
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(tilted[0], [[r, r], [r, -r], [1, 0]], atol=1e-6)  # unit(u + c_k)
    kept = steered_interests(interest, centres, alpha=1.0, keep=True)
    assert kept.shape == (1, 4, 2)
    np.testing.assert_allclose(kept[0, 0], [1, 0])  # the untilted interest first
    np.testing.assert_allclose(kept[0, 1:], tilted[0], atol=1e-6)
    # alpha 0: K copies of the interest; a large alpha: (nearly) the centres themselves
    np.testing.assert_allclose(steered_interests(interest, centres, 0.0, False)[0], [[1, 0]] * 3, atol=1e-6)
    np.testing.assert_allclose(steered_interests(interest, centres[:, :2], 1e6, False)[0], centres[0, :2], atol=1e-5)
