"""Checks of a runner's outputs: each protocol breach is a clear error naming the file and the problem;
history items still in a list are dropped and counted, repeated ids dropped."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.peers.outputs import PeerOutputError, SplitView, clean_lists, load_peer_output

SPLIT = SplitView(dataset="t", n_users=3, n_items=9, users=np.array([0, 2]), targets=np.array([5, 6]),
                  histories=[np.array([1, 2]), np.array([3])])
RESULT = {"library": "x", "version": "1", "model": "m", "epochs_run": 1, "train_seconds": 1.0,
          "infer_seconds": 0.1, "n_test_users": 2}


def _write(out, topk=None, result=RESULT):
    out.mkdir(parents=True, exist_ok=True)
    if topk is not None:
        np.save(out / "topk_test.npy", topk)
    if result is not None:
        (out / "result.json").write_text(json.dumps(result) if isinstance(result, dict) else result)
    return out


def test_valid_output_loads(tmp_path):
    result, topk = load_peer_output(_write(tmp_path, np.array([[5, 4, 0], [6, 7, 8]])), SPLIT, 3)
    assert result["model"] == "m" and topk.dtype == np.int64 and topk.tolist() == [[5, 4, 0], [6, 7, 8]]


@pytest.mark.parametrize("topk, result, message", [
    (np.array([[5, 4, 3]]), RESULT, r"topk_test.npy: shape \(1, 3\), expected \(2, 3\)"),
    (np.array([[5, 4], [6, 7]]), RESULT, r"topk_test.npy: shape \(2, 2\), expected \(2, 3\)"),
    (np.array([5, 4, 3, 6, 7, 8]), RESULT, r"shape \(6,\), expected \(2, 3\)"),
    (np.array([[5, 4, 10], [6, 7, 8]]), RESULT, r"1 item id\(s\) out of range 0..9 \(first: 10 in row 0, column 2\)"),
    (np.array([[5, 4, 3], [-1, 7, 8]]), RESULT, r"out of range 0..9 \(first: -1 in row 1, column 0\)"),
    (np.array([[5.0, 4, 3], [6, 7, 8]]), RESULT, r"topk_test.npy: dtype float64, expected int64"),
    (np.array([[5, 4, 3], [6, 7, 8]]), None, r"result.json: missing"),
    (np.array([[5, 4, 3], [6, 7, 8]]), "{not json", r"result.json: not valid JSON"),
    (np.array([[5, 4, 3], [6, 7, 8]]), {k: v for k, v in RESULT.items() if k != "infer_seconds"},
     r"result.json: missing key\(s\) \['infer_seconds'\]"),
    (np.array([[5, 4, 3], [6, 7, 8]]), {**RESULT, "n_test_users": 3}, r"n_test_users 3, but test.tsv has 2 users"),
    (None, RESULT, r"topk_test.npy: missing"),
])
def test_protocol_breaches_are_clear_errors(tmp_path, topk, result, message):
    with pytest.raises(PeerOutputError, match=message):
        load_peer_output(_write(tmp_path, topk, result), SPLIT, 3)


def test_history_items_dropped_and_counted():
    topk = np.array([[1, 5, 2, 4, 0], [6, 3, 3, 7, 6]])
    cleaned, violations, duplicates = clean_lists(topk, SPLIT.histories)
    assert cleaned.tolist() == [[5, 4, 0, 0, 0], [6, 7, 0, 0, 0]]
    assert violations == 4  # 1, 2 (user 0's history), 3 twice (user 2's history)
    assert duplicates == 1  # the second 6


def test_clean_lists_keeps_compliant_lists_unchanged():
    topk = np.array([[5, 4, 3], [6, 7, 8]])
    cleaned, violations, duplicates = clean_lists(topk, SPLIT.histories)
    assert np.array_equal(cleaned, topk) and violations == duplicates == 0
