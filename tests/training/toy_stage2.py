"""A toy stage-2 problem shared by the small training tests: random histories, a validation set, item tables."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from training.stage2 import ItemTables


def random_stage2_data(n_users: int, n_items: int, item_dim: int, lengths: tuple[int, int], n_valid: int):
    """``n_users`` random histories of ``lengths`` [lo, hi) items, the first ``n_valid`` of them with a random
    validation target, and exact item embeddings ``[n_items+1, item_dim]`` (row 0 = 0) as both item tables."""
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, n_items + 1, size=int(rng.integers(*lengths))) for _ in range(n_users)]
    valid = SimpleNamespace(histories=sequences[:n_valid], targets=rng.integers(1, n_items + 1, size=n_valid))
    exact = torch.randn(n_items + 1, item_dim, generator=torch.Generator().manual_seed(0))
    exact[0] = 0
    return sequences, valid, ItemTables(exact=exact, long=exact)
