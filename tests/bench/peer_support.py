"""Helpers shared by tests/test_peers_*.py and tests/test_bench_*.py: a tiny dataset file and its split."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_RUNNER = ROOT / "bench" / "peers" / "reference" / "run.py"


def write_tiny_dataset(folder: Path, name: str = "Tiny", n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """An S3-Rec-style text file (``user item item ...``): skewed popularity, a few 2-item (train-only) users."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        length = 2 if u % 10 == 0 else int(rng.integers(3, 12))
        items = rng.choice(np.arange(1, n_items + 1), size=length, replace=False, p=weights)
        lines.append(" ".join(map(str, [u, *items])))
    path = folder / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_data_and_split(folder: Path):
    from training.data import leave_one_out, load_dataset

    data = load_dataset(write_tiny_dataset(folder))
    return data, leave_one_out(data)
