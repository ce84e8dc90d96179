"""Interest labels per item, for interest coverage (``training.evaluate_window``).

An item may carry several interests (a film is Action *and* Sci-Fi), so labels are a boolean matrix
``[n_items+1, n_labels]`` (row 0 = padding, all False). :func:`item_interest_labels` picks the source, in
order of how much it says about a user's real interests:

1. ``"planted"`` — the topics the synthetic generator planted (``InteractionData.item_categories``): the
   ground truth that coverage should recover.
2. ``"item_file_categories"`` — the ``.item`` file's category column (``InteractionData.item_tags``; for
   MovieLens ML-100K / ML-1M the ``class:token_seq`` column = genres, 18 of them).
3. ``"codebook_layer0"`` — the first (coarsest) residual-codebook layer's code of each item, one label per item,
   when the dataset has no categories (the S3-Rec and SASRec text files).

:func:`as_label_matrix` turns every accepted shape (1-D labels, list of id arrays, boolean matrix, scipy sparse)
into the boolean matrix.

Caveat, measured on ML-1M (window W = 10, test windows): genres saturate. A target window holds 8.1 of the 18
genres on average and the plain popularity list already covers 0.868 of them at K = 20, 0.963 at K = 50 and
0.988 at K = 100, so genre Coverage@50 has little room to separate models; read it at small K, beside
``Interests@K``, or with the finer codebook clusters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from training.datasets.base import InteractionData

SOURCES = ("planted", "item_file_categories", "codebook_layer0")


@dataclass(frozen=True)
class ItemInterestLabels:
    """Interest labels of every item.

    Attributes:
        matrix: ``bool [n_items+1, n_labels]``; ``matrix[i, j]`` = item ``i`` has interest ``j``; row 0 all False.
        names: ``n_labels`` names (genre names, ``"topic 3"``, ``"code 17"``).
        source: one of :data:`SOURCES` — which source :func:`item_interest_labels` used.
    """

    matrix: np.ndarray
    names: list[str]
    source: str

    @property
    def n_labels(self) -> int:
        return int(self.matrix.shape[1])


def as_label_matrix(item_labels, n_rows: int) -> np.ndarray:
    """Any accepted label form → ``bool [n_rows, n_labels]`` (``n_rows = n_items + 1``, row 0 forced False).

    Accepted: an :class:`ItemInterestLabels`; a ``bool [n_rows, L]`` matrix (numpy or scipy sparse); a 1-D
    ``int [n_rows]`` array, one label per item, negative = none; a sequence of ``n_rows`` int arrays/lists
    (several labels per item, possibly empty).
    """
    if isinstance(item_labels, ItemInterestLabels):
        item_labels = item_labels.matrix
    if hasattr(item_labels, "toarray"):  # scipy sparse (CSR etc.)
        item_labels = item_labels.toarray()
    if isinstance(item_labels, np.ndarray) and item_labels.ndim == 2:
        if item_labels.shape[0] != n_rows:
            raise ValueError(f"item_labels matrix has {item_labels.shape[0]} rows, expected n_items+1 = {n_rows}")
        out = item_labels.astype(bool, copy=True)
    elif isinstance(item_labels, np.ndarray) and item_labels.ndim == 1 and item_labels.dtype != object:
        if len(item_labels) != n_rows:
            raise ValueError(f"item_labels has {len(item_labels)} entries, expected n_items+1 = {n_rows}")
        lab = item_labels.astype(np.int64)
        out = np.zeros((n_rows, int(lab.max(initial=-1)) + 1), dtype=bool)
        has = lab >= 0
        out[np.flatnonzero(has), lab[has]] = True
    elif isinstance(item_labels, Sequence) or (isinstance(item_labels, np.ndarray) and item_labels.dtype == object):
        if len(item_labels) != n_rows:
            raise ValueError(f"item_labels has {len(item_labels)} per-item id lists, expected n_items+1 = {n_rows}")
        ids = [np.asarray(x, dtype=np.int64).ravel() for x in item_labels]
        if any(len(x) and x.min() < 0 for x in ids):
            raise ValueError("item_labels: label ids in per-item lists must be >= 0")
        rows = np.repeat(np.arange(n_rows), [len(x) for x in ids])
        cols = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        out = np.zeros((n_rows, int(cols.max(initial=-1)) + 1), dtype=bool)
        out[rows, cols] = True
    else:
        raise TypeError(f"item_labels of type {type(item_labels).__name__} is not a label matrix, 1-D label array "
                        "or list of per-item label id arrays")
    out[0] = False  # padding has no interest
    return out


def labels_from_codes(codes: np.ndarray) -> ItemInterestLabels:
    """First-layer codebook clusters: ``codes int [n_items+1, L]`` (row 0 = padding) → one label per item."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise ValueError(f"codes must be [n_items+1, L] with L >= 1, got shape {codes.shape}")
    first = codes[:, 0].astype(np.int64)
    first[0] = -1
    matrix = as_label_matrix(first, len(first))
    return ItemInterestLabels(matrix, [f"code {j}" for j in range(matrix.shape[1])], "codebook_layer0")


def item_interest_labels(data: InteractionData, codebook=None,
                         item_embeddings: np.ndarray | None = None) -> ItemInterestLabels:
    """Pick the best available interest labels for ``data`` (order: module docstring); ``.source`` says which.

    Args:
        data: the dataset.
        codebook: used only when the data has neither planted topics nor categories: either the item codes
            ``int [n_items+1, L]`` (row 0 = padding; a run's ``item_codes.npy``) or a fitted
            ``features.codebook.ResidualCodebook`` (then ``item_embeddings`` is required).
        item_embeddings: ``float [n_items+1, d]`` (row 0 = padding), to encode with a ``ResidualCodebook``.

    Raises:
        ValueError: no source is available (no planted topics, no categories, no codebook), or shapes disagree.
    """
    n_rows = data.n_items + 1
    if data.item_categories is not None:
        cats = np.asarray(data.item_categories, dtype=np.int64)
        matrix = as_label_matrix(cats, n_rows)
        return ItemInterestLabels(matrix, [f"topic {j}" for j in range(matrix.shape[1])], "planted")
    if data.item_tags is not None and any(data.item_tags[1:]):
        names = sorted({t for tags in data.item_tags[1:] for t in tags})
        col = {t: j for j, t in enumerate(names)}
        matrix = as_label_matrix([[col[t] for t in tags] for tags in data.item_tags], n_rows)
        return ItemInterestLabels(matrix, names, "item_file_categories")
    if codebook is None:
        raise ValueError(f"dataset {data.name!r} has no planted topics and no item categories: pass its codebook "
                         "(item codes [n_items+1, L] or a ResidualCodebook with item_embeddings) for cluster labels")
    if isinstance(codebook, np.ndarray):
        codes = codebook
    else:
        if item_embeddings is None:
            raise ValueError("a ResidualCodebook needs item_embeddings [n_items+1, d] to give each item its code")
        emb = np.asarray(item_embeddings)
        if emb.ndim != 2 or emb.shape[0] != n_rows:
            raise ValueError(f"item_embeddings shape {emb.shape}, expected [n_items+1 = {n_rows}, d]")
        codes = np.concatenate([np.zeros((1, codebook.config.n_layers), np.int64),
                                codebook.encode(emb[1:]).astype(np.int64)])
    if len(codes) != n_rows:
        raise ValueError(f"codes have {len(codes)} rows, expected n_items+1 = {n_rows}")
    return labels_from_codes(codes)
