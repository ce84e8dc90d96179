"""How sure is a relative gain? A paired bootstrap over the test users of two runs on the same split.

The mechanisms bench compares models on one split of one dataset, often a 1,000-user cut: a +6 % gain in mean
NDCG@10 can then be noise. Both models rank the same users, so the users are resampled together (paired), and
the interval is the 2.5th–97.5th percentile of mean(a) / mean(b) − 1 over the resamples.

Per-user scores come from the ranked lists each run saved (``topk_test_<method>.npy``, the lists its metrics were
computed from) and the run's own split, rebuilt from its ``config.json`` (dataset, protocol, window size):
  * leave-one-out: NDCG@10 of the one test item;
  * window: Recall@50 of the test window (distinct targets found in the top 50 / distinct targets).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from training.evaluate import ranks_in_lists


def paired_gain_interval(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
    """Per-user scores a, b [U] of two methods on the same users → (gain, low, high) of mean(a)/mean(b) − 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores need two equal 1-d arrays, got {a.shape} and {b.shape}")
    if b.mean() <= 0:
        raise ValueError("the reference method scores 0 on every user: no relative gain")
    rng = np.random.default_rng(seed)
    gains = np.empty(resamples)
    for start in range(0, resamples, 500):  # [500, U] index blocks: memory stays small on 6,040-user sets
        idx = rng.integers(0, len(a), (min(500, resamples - start), len(a)))
        mean_b = b[idx].mean(axis=1)
        gains[start:start + len(idx)] = np.where(mean_b > 0, a[idx].mean(axis=1) / np.maximum(mean_b, 1e-12) - 1,
                                                 np.inf)
    low, high = np.percentile(gains, [50 * (1 - level), 50 * (1 + level)])
    return float(a.mean() / b.mean() - 1), float(low), float(high)


@lru_cache(maxsize=4)
def _test_targets(dataset: str, protocol: str, window: int) -> tuple:
    from training.protocols import make_split
    from training.train import load_run_data

    test = make_split(load_run_data(dataset), protocol, window).test
    return tuple(np.asarray(t) for t in test.targets) if protocol == "window" else (np.asarray(test.targets),)


def per_user_scores(run_dir: Path, method: str = "hymirec") -> np.ndarray:
    """[U_test] leave-one-out NDCG@10 or window Recall@50 of ``run_dir/topk_test_<method>.npy``.

    Leave-one-out lists mask the whole history (the peers' rule), the evaluator leaves a re-consumed target
    rankable; they agree wherever no test target is in its user's history, as on ML-100K, ML-1M, Beauty and Games
    (checked 2026-12-06: 0 of 943, 6,040, 22,363 and 50,546 test targets)."""
    path = Path(run_dir) / f"topk_test_{method}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ranked lists of {method!r} in this run")
    config = json.loads((Path(run_dir) / "config.json").read_text())
    protocol, window = config["train"]["protocol"], int(config["train"]["eval_window"])
    topk = np.load(path)
    targets = _test_targets(config["dataset"], protocol, window)
    if protocol == "window":
        if len(targets) != len(topk):
            raise ValueError(f"{path}: {len(topk)} lists for {len(targets)} test windows")
        return window_recall50_per_user(topk, targets)
    return ndcg10_per_user(topk, targets[0])


def window_recall50_per_user(lists: np.ndarray, target_sets) -> np.ndarray:
    """[U] window Recall@50 of each user's list: distinct targets found in the top 50 / distinct targets."""
    return np.array([np.isin(np.unique(t), row[:50]).mean() for t, row in zip(target_sets, lists)])


def ndcg10_per_user(lists: np.ndarray, targets) -> np.ndarray:
    """[U] NDCG@10 of each user's one target in its ranked list (0 outside the top 10)."""
    ranks = ranks_in_lists(lists, targets)
    return np.where((ranks >= 0) & (ranks < 10), 1.0 / np.log2(np.maximum(ranks, 0) + 2), 0.0)


def format_gain(gain: float, low: float | None = None, high: float | None = None) -> str:
    """(0.092, 0.033, 0.157) → "+9.2 % (95 % CI +3.3 to +15.7 %)"; without an interval "+9.2 %"."""
    if low is None or high is None:
        return f"{100 * gain:+.1f} %"
    return f"{100 * gain:+.1f} % (95 % CI {100 * low:+.1f} to {100 * high:+.1f} %)"


def run_gain_interval(run_a: Path, run_b: Path, method_a: str = "hymirec",
                      method_b: str = "hymirec") -> tuple[float, float, float] | None:
    """(gain, low, high) of method_a in run_a against method_b in run_b (same split), or None where a run has no
    lists (an older one, or a peer's): the report then shows the point gain only."""
    try:
        return paired_gain_interval(per_user_scores(run_a, method_a), per_user_scores(run_b, method_b))
    except (OSError, KeyError, ValueError):
        return None


def run_gain(run_a: Path, run_b: Path, method_a: str = "hymirec", method_b: str = "hymirec") -> str:
    """"+5.9 % (95 % CI −4.8 to +17.7 %)" for :func:`run_gain_interval`, or "–"."""
    interval = run_gain_interval(run_a, run_b, method_a, method_b)
    return format_gain(*interval) if interval else "–"


def peer_user_scores(peer_dir: Path, split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A peer library's leave-one-out lists (``peer_dir/topk_test.npy``), history items dropped as the bench scores
    them → ([U_test] NDCG@10, [U_test] targets), in the order of the peer split's test.tsv."""
    from bench.peers.outputs import clean_lists, read_split

    split = read_split(split_dir)
    lists, _, _ = clean_lists(np.load(Path(peer_dir) / "topk_test.npy"), split.histories)
    return ndcg10_per_user(lists, split.targets), split.targets


def peer_gain_interval(run_dir: Path, peer_dir: Path, split_dir: Path,
                       method: str = "hymirec") -> tuple[float, float, float] | None:
    """(gain, low, high) of ``method`` of a leave-one-out run against a peer on that run's split, paired by user, or
    None when the two do not rank the same users in the same order (their test targets must match one for one)."""
    try:
        ours = per_user_scores(run_dir, method)
        theirs, targets = peer_user_scores(peer_dir, split_dir)
        config = json.loads((Path(run_dir) / "config.json").read_text())
        train = config["train"]
        ours_targets = _test_targets(config["dataset"], train["protocol"], int(train["eval_window"]))[0]
        if len(ours_targets) != len(targets) or not np.array_equal(np.asarray(ours_targets), targets):
            return None
        return paired_gain_interval(ours, theirs)
    except (OSError, KeyError, ValueError):
        return None


def peer_gain(run_dir: Path, peer_dir: Path, split_dir: Path, method: str = "hymirec") -> str:
    """"+5.9 % (95 % CI −4.8 to +17.7 %)" for :func:`peer_gain_interval`, or "–"."""
    interval = peer_gain_interval(run_dir, peer_dir, split_dir, method)
    return format_gain(*interval) if interval else "–"
