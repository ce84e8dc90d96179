"""Reading a protocol split back and checking what a runner wrote (docs/peers.md).

* :func:`read_split` → :class:`SplitView`: the test users in ``test.tsv`` order, their targets and their
  histories (train + valid, chronological) straight from the split files, so validation never depends on
  in-memory state of the process that exported them.
* :func:`load_peer_output` checks ``topk_test.npy`` and ``result.json`` (missing file, unreadable file,
  wrong dtype / shape / row count, ids out of range → :class:`PeerOutputError` naming the file and the problem).
* :func:`clean_lists` drops every item of the user's history that a list still holds (protocol violation:
  a runner must exclude the history) and repeated ids, shifting the rest left and padding with 0.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULT_KEYS = ("library", "version", "model", "epochs_run", "train_seconds", "infer_seconds", "n_test_users")


class PeerOutputError(ValueError):
    """A runner's output (or a split directory) does not follow the protocol."""


@dataclass
class SplitView:
    """What validation and scoring need from a split directory.

    Attributes:
        n_users, n_items: from manifest.json (items are 1..n_items).
        users: ``int64 [U_test]`` test users in ``test.tsv`` order.
        targets: ``int64 [U_test]`` test items.
        histories: per test user ``int64 [L]`` train items then the valid item (what the runner ranks after).
    """

    dataset: str
    n_users: int
    n_items: int
    users: np.ndarray
    targets: np.ndarray
    histories: list[np.ndarray]


def _read_tsv(path: Path) -> np.ndarray:
    """``[rows, 3]`` int64 (user, item, position) of one split file; header line skipped."""
    if not path.is_file():
        raise PeerOutputError(f"{path}: missing split file")
    with path.open() as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header != ["user_id", "item_id", "timestamp"]:
            raise PeerOutputError(f"{path}: header {header}, expected user_id, item_id, timestamp")
        body = handle.read()
    if not body.strip():
        return np.zeros((0, 3), np.int64)
    rows = np.array(body.split(), dtype=np.int64)
    if len(rows) % 3:
        raise PeerOutputError(f"{path}: every line must hold 3 tab-separated integers")
    return rows.reshape(-1, 3)


def read_split(split_dir: str | Path) -> SplitView:
    split_dir = Path(split_dir)
    manifest_path = split_dir / "manifest.json"
    if not manifest_path.is_file():
        raise PeerOutputError(f"{manifest_path}: missing (not a split directory written by bench.peers.split_export)")
    manifest = json.loads(manifest_path.read_text())
    train, valid, test = (_read_tsv(split_dir / f"{part}.tsv") for part in ("train", "valid", "test"))
    n_users = int(manifest["n_users"])
    # train + valid rows of every user, in position order: the history the runner ranks after.
    rows = np.concatenate([train, valid])
    rows = rows[np.lexsort((rows[:, 2], rows[:, 0]))]
    starts = np.searchsorted(rows[:, 0], np.arange(n_users + 1))
    histories = [rows[starts[u]:starts[u + 1], 1].copy() for u in test[:, 0]]
    return SplitView(dataset=str(manifest.get("dataset", split_dir.name)), n_users=n_users,
                     n_items=int(manifest["n_items"]), users=test[:, 0].copy(), targets=test[:, 1].copy(),
                     histories=histories)


def load_result_json(path: Path) -> dict:
    if not path.is_file():
        raise PeerOutputError(f"{path}: missing (the runner must write result.json, docs/peers.md)")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PeerOutputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(result, dict):
        raise PeerOutputError(f"{path}: must hold a JSON object, got {type(result).__name__}")
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise PeerOutputError(f"{path}: missing key(s) {missing}")
    return result


def check_topk(topk: np.ndarray, split: SplitView, topk_len: int, name: str = "topk_test.npy") -> np.ndarray:
    """dtype / shape / row count / id range of a ``[U_test, topk]`` list array → int64 copy."""
    if not np.issubdtype(topk.dtype, np.integer):
        raise PeerOutputError(f"{name}: dtype {topk.dtype}, expected int64 item ids")
    expected = (len(split.targets), topk_len)
    if topk.ndim != 2 or topk.shape != expected:
        raise PeerOutputError(f"{name}: shape {topk.shape}, expected {expected} "
                              f"(one row per test.tsv user, {topk_len} items per row)")
    bad = (topk < 0) | (topk > split.n_items)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise PeerOutputError(f"{name}: {int(bad.sum())} item id(s) out of range 0..{split.n_items} "
                              f"(first: {int(topk[row, col])} in row {row}, column {col})")
    return topk.astype(np.int64, copy=True)


def load_peer_output(out_dir: str | Path, split: SplitView, topk_len: int) -> tuple[dict, np.ndarray]:
    """``(result.json dict, topk int64 [U_test, topk_len])`` after every protocol check."""
    out_dir = Path(out_dir)
    result = load_result_json(out_dir / "result.json")
    path = out_dir / "topk_test.npy"
    if not path.is_file():
        raise PeerOutputError(f"{path}: missing (the runner must write topk_test.npy, docs/peers.md)")
    try:
        topk = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise PeerOutputError(f"{path}: not a readable .npy array ({exc})") from exc
    topk = check_topk(topk, split, topk_len, str(path))
    if int(result["n_test_users"]) != len(split.targets):
        raise PeerOutputError(f"{out_dir / 'result.json'}: n_test_users {result['n_test_users']}, "
                              f"but test.tsv has {len(split.targets)} users")
    return result, topk


def clean_lists(topk: np.ndarray, histories: list[np.ndarray]) -> tuple[np.ndarray, int, int]:
    """Drop history items and repeated ids from each row (order kept, 0-padded at the end).

    Returns ``(cleaned [U, K], history items dropped (protocol violations), duplicates dropped)``.
    """
    out = np.zeros_like(topk)
    violations = duplicates = 0
    for u, row in enumerate(topk):
        items = row[row > 0]
        in_history = np.isin(items, histories[u])
        violations += int(in_history.sum())
        items = items[~in_history]
        _, first = np.unique(items, return_index=True)
        duplicates += len(items) - len(first)
        items = items[np.sort(first)]
        out[u, :len(items)] = items
    return out, violations, duplicates
