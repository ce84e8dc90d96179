"""The paired bootstrap behind the mechanisms report's intervals, and the per-user scores it resamples."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.paired import paired_gain_interval, per_user_scores, run_gain
from training.protocols import make_split
from training.train import load_run_data


def test_interval_of_exact_ratios_is_a_point():
    b = np.array([0.2, 0.5, 0.0, 1.0])
    assert paired_gain_interval(b, b) == (0.0, 0.0, 0.0)
    gain, low, high = paired_gain_interval(2 * b, b)
    assert gain == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_interval_covers_the_gain_and_narrows_with_more_users():
    rng = np.random.default_rng(1)

    def width(n):
        b = rng.random(n)
        a = b * 1.1 + rng.normal(0, 0.3, n)  # a 10 % gain under per-user noise
        gain, low, high = paired_gain_interval(a, b, resamples=2000)
        assert low < gain < high
        return high - low

    assert width(4000) < 0.5 * width(250)  # ~1/sqrt(16) as wide in theory


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="two equal 1-d arrays"):
        paired_gain_interval(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="scores 0 on every user"):
        paired_gain_interval(np.ones(3), np.zeros(3))


def _run(tmp_path, name, protocol, topk):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "synthetic",
                                                 "train": {"protocol": protocol, "eval_window": 10}}))
    np.save(run / "topk_test_hymirec.npy", topk)
    return run


def test_leave_one_out_scores_are_ndcg10_of_the_one_target(tmp_path):
    test = make_split(load_run_data("synthetic"), "leave_one_out", 10).test
    targets = np.asarray(test.targets)
    topk = np.zeros((len(targets), 20), dtype=np.int64)
    topk[0::3, 0] = targets[0::3]  # rank 0: 1.0
    topk[1::3, 3] = targets[1::3]  # rank 3: 1 / log2(5)
    topk[2::3, 15] = targets[2::3]  # rank 15: outside the top 10
    scores = per_user_scores(_run(tmp_path, "loo", "leave_one_out", topk))
    assert np.allclose(scores[0::3], 1.0) and np.allclose(scores[1::3], 1 / np.log2(5)) and not scores[2::3].any()


def test_window_scores_are_recall50_of_the_distinct_targets(tmp_path):
    test = make_split(load_run_data("synthetic"), "window", 10).test
    topk = np.zeros((len(test.targets), 100), dtype=np.int64)
    want = []
    for u, window in enumerate(test.targets):
        distinct = np.unique(window)
        half = distinct[: len(distinct) // 2]
        topk[u, 10:10 + len(half)] = half  # found in the top 50
        topk[u, 60:60 + len(distinct) - len(half)] = distinct[len(half):]  # found, but past 50
        want.append(len(half) / len(distinct))
    base = _run(tmp_path, "window", "window", topk)
    assert np.allclose(per_user_scores(base), want)
    better = topk.copy()
    better[:, :50], better[:, 50:] = topk[:, 50:], topk[:, :50]  # the other half, now inside the top 50
    assert run_gain(_run(tmp_path, "better", "window", better), base).startswith(
        f"{100 * (np.mean(1 - np.array(want)) / np.mean(want) - 1):+.1f} % (95 % CI")
    assert run_gain(tmp_path / "missing", base) == "–"  # no lists: the report falls back to the point gain


def test_peer_lists_pair_with_the_run_by_user_or_not_at_all(tmp_path):
    from bench.paired import peer_gain, peer_user_scores
    from bench.peers.split_export import export_split
    from training.data import leave_one_out

    data = load_run_data("synthetic")
    split = leave_one_out(data)
    split_dir = export_split(data, split, tmp_path / "split")
    targets = np.asarray(split.test.targets)
    # half the users hit at rank 0; never a target the user had before (a list holds no history item, the peer's
    # are cleaned of them as the bench scores them)
    fresh = np.array([t not in set(h.tolist()) for t, h in zip(targets, split.test.histories)])
    hit = fresh & (np.arange(len(targets)) % 2 == 0)
    topk = np.zeros((len(targets), 20), dtype=np.int64)
    topk[hit, 0] = targets[hit]
    run = _run(tmp_path, "run", "leave_one_out", topk)
    peer = tmp_path / "peer"
    peer.mkdir()
    np.save(peer / "topk_test.npy", topk)  # the same lists: no gain, whatever the resample
    scores, peer_targets = peer_user_scores(peer, split_dir)
    assert np.array_equal(peer_targets, targets) and np.allclose(scores, per_user_scores(run))
    assert peer_gain(run, peer, split_dir) == "+0.0 % (95 % CI +0.0 to +0.0 %)"
    worse = topk.copy()
    worse[np.flatnonzero(hit)[::2], 0] = 0  # the peer loses every other hit
    np.save(peer / "topk_test.npy", worse)
    kept = hit.sum() - len(np.flatnonzero(hit)[::2])
    assert peer_gain(run, peer, split_dir).startswith(f"{100 * (hit.sum() / kept - 1):+.1f} % (95 % CI +")
    # a peer that ranked another split (other users or order) is not paired
    other = export_split(data, leave_one_out(data), tmp_path / "other")
    lines = (other / "test.tsv").read_text().splitlines()
    (other / "test.tsv").write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")
    np.save(peer / "topk_test.npy", topk[::-1].copy())
    assert peer_gain(run, peer, other) == "–"
