"""Window protocol split: each user's last ``W`` items are the test targets, the ``W`` before them validate.

Leave-one-out (:func:`training.data.leave_one_out`) holds out one item per user, so it cannot tell whether a
model covers several of a user's interests; the window protocol holds out a *set* of ``W`` items (W = 10, the
DMIL training window) and scores the ranked list against the whole set (``training.evaluate_window``).

Rule, per user sequence ``seq`` (chronological, length ``L``):

* ``L >= 2 * W + min_history`` → evaluated: ``train = seq[:-2W]``; valid: history ``seq[:-2W]``, targets
  ``seq[-2W:-W]``; test: history ``seq[:-W]`` (it includes the validation window), targets ``seq[-W:]``.
* shorter users are skipped from evaluation and keep their whole sequence in ``train`` (as leave-one-out does
  with users under 3 items), so no interaction is lost to training.

With ``W = 10`` and ``min_history = 1`` a user needs 21 items; on ML-1M (minimum 20 per user) that skips
only the users with exactly 20.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.datasets.base import InteractionData

DEFAULT_WINDOW = 10


@dataclass
class WindowSet:
    """Evaluation users of one window split.

    Attributes:
        users: ``int64 [U]`` user indices into ``InteractionData.sequences``.
        histories: per evaluated user, ``int64 [L_u]`` items before the window (chronological).
        targets: per evaluated user, ``int64 [W]`` the held-out window, chronological (may repeat an item or
            contain an item of the history: re-consumption; metrics use the distinct set).
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class WindowSplit:
    """Window split (see the module docstring for the rule).

    Attributes:
        train: one array per user, aligned with ``InteractionData.sequences``.
        valid: history ``seq[:-2W]``, targets ``seq[-2W:-W]``.
        test: history ``seq[:-W]``, targets ``seq[-W:]``.
        window: ``W``.
        min_history: the fewest history items an evaluated user has before its validation window.
    """

    train: list[np.ndarray]
    valid: WindowSet
    test: WindowSet
    window: int
    min_history: int


def window_split(data: InteractionData, window: int = DEFAULT_WINDOW, min_history: int = 1) -> WindowSplit:
    """Split every user's sequence into train / validation window / test window (rule: module docstring).

    Args:
        data: the dataset; its sequences are chronological.
        window: ``W`` ≥ 1, targets per user in each of valid and test.
        min_history: ≥ 1, history items required before the validation window (a model needs an input).
    """
    if window < 1 or min_history < 1:
        raise ValueError(f"window ({window}) and min_history ({min_history}) must both be >= 1")
    need = 2 * window + min_history
    train: list[np.ndarray] = []
    users, v_hist, v_tgt, t_hist, t_tgt = [], [], [], [], []
    for u, seq in enumerate(data.sequences):
        if len(seq) < need:
            train.append(seq.copy())
            continue
        train.append(seq[: -2 * window].copy())
        users.append(u)
        v_hist.append(seq[: -2 * window].copy())
        v_tgt.append(seq[-2 * window: -window].copy())
        t_hist.append(seq[:-window].copy())
        t_tgt.append(seq[-window:].copy())
    uarr = np.asarray(users, dtype=np.int64)
    return WindowSplit(
        train=train,
        valid=WindowSet(uarr, v_hist, v_tgt),
        test=WindowSet(uarr.copy(), t_hist, t_tgt),
        window=window,
        min_history=min_history,
    )
