"""The split export (docs/peers.md) round trip: files, ids, positions, targets = leave_one_out, read_split."""
from __future__ import annotations

import json

import numpy as np
import pytest
from peer_support import tiny_data_and_split

from bench.peers.outputs import PeerOutputError, read_split
from bench.peers.split_export import HEADER, SPLIT_FORMAT, export_split


def _rows(path):
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    return np.array([list(map(int, line.split("\t"))) for line in lines[1:]], dtype=np.int64).reshape(-1, 3)


def test_export_round_trip(tmp_path):
    data, split = tiny_data_and_split(tmp_path / "data")
    out = export_split(data, split, tmp_path / "split")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.tsv", "train.tsv", "valid.tsv"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {"format": SPLIT_FORMAT, "dataset": data.name, "n_users": len(data.sequences),
                        "n_items": data.n_items}

    train, valid, test = (_rows(out / f"{part}.tsv") for part in ("train", "valid", "test"))
    for rows in (train, valid, test):
        assert rows[:, 0].min() >= 0 and rows[:, 0].max() < len(data.sequences)
        assert rows[:, 1].min() >= 1 and rows[:, 1].max() <= data.n_items  # 0 (padding) never appears
    # train rows: every user's training items at positions 0, 1, 2, ... in order
    for u, seq in enumerate(split.train):
        mine = train[train[:, 0] == u]
        assert np.array_equal(mine[:, 1], seq) and np.array_equal(mine[:, 2], np.arange(len(seq)))
    # valid/test: leave_one_out's targets, users in its order, right after the training positions
    assert np.array_equal(valid[:, 0], split.valid.users) and np.array_equal(valid[:, 1], split.valid.targets)
    assert np.array_equal(test[:, 0], split.test.users) and np.array_equal(test[:, 1], split.test.targets)
    for u, _, pos in valid:
        assert pos == len(split.train[u]) and np.array_equal(data.sequences[u][-2:-1], valid[valid[:, 0] == u, 1])
    for u, _, pos in test:
        assert pos == len(split.train[u]) + 1 and data.sequences[u][-1] == test[test[:, 0] == u, 1][0]
    short = [u for u, s in enumerate(data.sequences) if len(s) < 3]
    assert short and not np.isin(short, test[:, 0]).any()  # short users are train-only

    view = read_split(out)
    assert view.n_items == data.n_items and view.n_users == len(data.sequences)
    assert np.array_equal(view.users, split.test.users) and np.array_equal(view.targets, split.test.targets)
    assert all(np.array_equal(a, b) for a, b in zip(view.histories, split.test.histories))


def test_read_split_rejects_a_folder_without_manifest(tmp_path):
    with pytest.raises(PeerOutputError, match="manifest.json: missing"):
        read_split(tmp_path)
