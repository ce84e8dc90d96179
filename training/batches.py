"""Turning item sequences into model inputs: window-target training samples and eval inputs.

All id arrays are left-padded with 0 so the most recent item is always the last column.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.history_window import long_window


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """Keep the last `length` items of each sequence, left-pad with 0 → [B, length] int64."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:] if length else seq[:0]
        if len(tail):
            out[row, length - len(tail):] = tail
    return out


@dataclass
class ModelInputs:
    long_ids: np.ndarray  # [B, T] long history (decoded through the codebook), 0 = padding
    recent_ids: np.ndarray  # [B, N] most recent items (exact embeddings), 0 = padding


@dataclass
class TrainBatch(ModelInputs):
    target_ids: np.ndarray  # [B, W] window targets, 0 = padding
    target_mask: np.ndarray  # [B, W] bool


def model_inputs(histories: list[np.ndarray], long_len: int, recent_n: int,
                 long_window_mode: str = "all") -> ModelInputs:
    """histories (item indices, oldest first) → long_ids [B, T] and recent_ids [B, recent_n], left-padded.

    The long window follows core.history_window.long_window (``long_window_mode`` "all": the last
    ``long_len`` items; "older": the ``long_len`` items before the ``recent_n`` recent ones), the same rule
    serving's Decode applies to a user's stored codes.
    """
    longs = [h[long_window(len(h), long_len, recent_n, long_window_mode)] for h in histories]
    longest = max((len(h) for h in longs), default=1)
    t = max(1, min(long_len, longest))  # no wider than needed: attention cost grows with T²
    return ModelInputs(left_pad(longs, t), left_pad(histories, recent_n))


def window_samples(
    sequences: list[np.ndarray], window: int, samples_per_user: int, rng: np.random.Generator,
    stride: int | None = None,
) -> list[tuple[int, int]]:
    """(sequence index, cut) pairs: input = seq[:cut], targets = seq[cut:cut + window].

    Every sequence with ≥ 2 items gives its final window (cut = max(1, len - window)) plus
    `samples_per_user` random earlier cuts, so long histories are seen at many lengths.
    `samples_per_user < 0` means "about one cut per `stride` items of the sequence" (capped at 16), so
    an epoch covers every user's interactions roughly once whatever the dataset's lengths. The stride is
    the number of items one sample supervises: the window (default), or the N recent positions when the
    dense next-item loss is on (then window-sized strides would repeat each position ~N/W times per epoch).
    """
    stride = max(1, stride or window)
    samples: list[tuple[int, int]] = []
    for index, seq in enumerate(sequences):
        n = len(seq)
        if n < 2:
            continue
        samples.append((index, max(1, n - window)))
        extra = samples_per_user if samples_per_user >= 0 else min(16, (n - 1) // stride)
        if n - window > 1 and extra > 0:
            for cut in rng.integers(1, n - window, size=extra):
                samples.append((index, int(cut)))
    return samples


def strided_cuts(sequences: list[np.ndarray], stride: int) -> list[tuple[int, int]]:
    """(sequence index, cut) pairs at every ``stride`` items from each sequence's end: cut = n - 1, n - 1 - stride,
    ... ≥ 1. With the dense loss on each cut's last ``stride`` recent positions (training/dmil.next_item_loss
    ``last``), items 1..n-1 of a sequence are each a next-item label exactly once."""
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, got {stride}")
    return [(index, cut) for index, seq in enumerate(sequences) for cut in range(len(seq) - 1, 0, -stride)]


def long_lengths(samples: list[tuple[int, int]], long_len: int, recent_n: int, long_window_mode: str) -> np.ndarray:
    """How many items each sample's long window holds (what its batch pads the lightweight recommender's input to)."""
    return np.array([len(range(cut)[long_window(cut, long_len, recent_n, long_window_mode)]) for _, cut in samples],
                    dtype=np.int64)


def batch_indices(lengths: np.ndarray, batch_size: int, buckets: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sample indices per batch, an epoch's worth. ``buckets`` 0: one shuffled order cut into batches. ``buckets``
    B > 0: the shuffled order in runs of B batches' worth, each run sorted by ``lengths`` before it is cut, then the
    batches shuffled: every sample still once an epoch, each batch of similar lengths (less padding to compute)."""
    order = rng.permutation(len(lengths))
    if buckets <= 0:
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    batches = []
    for start in range(0, len(order), batch_size * buckets):
        run = order[start:start + batch_size * buckets]
        run = run[np.argsort(lengths[run], kind="stable")]
        batches += [run[i:i + batch_size] for i in range(0, len(run), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_batch(
    sequences: list[np.ndarray], samples: list[tuple[int, int]], long_len: int, recent_n: int, window: int,
    long_window_mode: str = "all",
) -> TrainBatch:
    inputs = [sequences[i][:cut] for i, cut in samples]
    targets = [sequences[i][cut:cut + window] for i, cut in samples]
    base = model_inputs(inputs, long_len, recent_n, long_window_mode)
    target_ids = np.zeros((len(samples), window), dtype=np.int64)
    for row, tgt in enumerate(targets):
        target_ids[row, :len(tgt)] = tgt
    return TrainBatch(base.long_ids, base.recent_ids, target_ids, target_ids > 0)
