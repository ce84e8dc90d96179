"""Reference runner of the peer file protocol (docs/peers.md): most-popular items, history masked.

A real (trivial) recommender and the smallest complete example of a runner: standalone (numpy only, never
imports the project), same command line as the library runners, same outputs and error behaviour. The tests
drive it through ``bench.peers.runner.run_peer`` with the main venv's python; it is not one of the peers
in the benchmark table.

    python bench/peers/reference/run.py --split DIR --out DIR --model popularity \
        --epochs 1 --time-budget 60 --seed 0 --dim 64 --max-len 50 --topk 100

Ranking: training count over train.tsv, descending; ties broken by the smaller item id (the same order as
``training.evaluate.popularity_topk``). History = the user's train rows + valid row; its items are excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("popularity",)
SPLIT_FORMAT = "hymirec-peer-split/1"


class ProtocolError(Exception):
    pass


def read_rows(path: Path) -> np.ndarray:
    """[rows, 3] int64 (user, item, position) of a split file."""
    if not path.is_file():
        raise ProtocolError(f"bad split directory: {path} is missing")
    with path.open() as handle:
        if handle.readline().split() != ["user_id", "item_id", "timestamp"]:
            raise ProtocolError(f"bad split directory: {path} has no user_id/item_id/timestamp header")
        values = np.array(handle.read().split(), dtype=np.int64)
    if len(values) % 3:
        raise ProtocolError(f"bad split directory: {path} has a line without 3 columns")
    return values.reshape(-1, 3)


def load_split(split: Path):
    manifest_path = split / "manifest.json"
    if not manifest_path.is_file():
        raise ProtocolError(f"bad split directory: {manifest_path} is missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != SPLIT_FORMAT:
        raise ProtocolError(f"bad split directory: format {manifest.get('format')!r}, expected {SPLIT_FORMAT!r}")
    return manifest, read_rows(split / "train.tsv"), read_rows(split / "valid.tsv"), read_rows(split / "test.tsv")


def histories_by_user(rows: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Items per user in position order."""
    rows = rows[np.lexsort((rows[:, 2], rows[:, 0]))]
    starts = np.searchsorted(rows[:, 0], np.arange(n_users + 1))
    return [rows[starts[u]:starts[u + 1], 1] for u in range(n_users)]


def recommend(train: np.ndarray, histories: list[np.ndarray], users: np.ndarray, n_items: int, k: int) -> np.ndarray:
    counts = np.bincount(train[:, 1], minlength=n_items + 1)[: n_items + 1]
    order = np.lexsort((np.arange(n_items + 1), -counts))  # count desc, then id asc
    order = order[order != 0]
    out = np.zeros((len(users), k), dtype=np.int64)
    for row, user in enumerate(users):
        seen = histories[user]
        head = order[: k + len(seen)]  # enough to survive removing the whole history
        head = head[~np.isin(head, seen)][:k]
        out[row, : len(head)] = head
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=None)
    parser.add_argument("--patience", type=int, default=None)  # protocol flag; most-popular trains nothing
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--topk", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        if args.model not in MODELS:
            raise ProtocolError(f"unknown model {args.model!r} (this runner has: {', '.join(MODELS)})")
        manifest, train, valid, test = load_split(args.split)
        n_users, n_items = int(manifest["n_users"]), int(manifest["n_items"])
        started = time.perf_counter()
        # "Training": one pass over train.tsv (the counts). Nothing to stop early.
        histories = histories_by_user(np.concatenate([train, valid]), n_users)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        topk = recommend(train, histories, test[:, 0], n_items, args.topk)
        infer_seconds = time.perf_counter() - started
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "topk_test.tmp.npy"
        np.save(tmp, topk)
        os.replace(tmp, args.out / "topk_test.npy")
        (args.out / "result.json").write_text(json.dumps({
            "library": "reference", "version": "1", "model": args.model, "epochs_run": 1,
            "train_seconds": train_seconds, "infer_seconds": infer_seconds, "n_test_users": int(len(test)),
            "params": {"topk": args.topk}, "notes": "most popular over train.tsv, history masked"}, indent=2))
        print(f"[reference] {len(test)} users ranked over {n_items} items in {infer_seconds:.2f}s")
        return 0
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
