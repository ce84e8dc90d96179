"""Item → residual-codebook codes, as the stream processor and the pipelines use them.

The item-codes table (written when the codebook is fitted or refreshed) maps raw item ids to L small integer
codes. :class:`ItemCodeMapper` looks codes up for the processor and encodes items the table has never seen on
the fly from their embedding (when one is available) with the codebook.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from core.artifacts import RunLayout

from .store.base import OnlineStore

log = logging.getLogger(__name__)


class StreamConfigError(ValueError):
    """Bad processor configuration, e.g. an unreadable item-codes table (exit code 2)."""



def load_item_codes(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read an item-codes table: a run directory (item_ids.json + item_codes.npy, row 0 = padding), an ``.npz``
    (arrays ``item_ids`` and ``codes``) or a ``.parquet`` (columns ``item_id`` and ``codes`` [L ints])."""
    path = Path(path)
    try:
        if path.is_dir():
            layout = RunLayout.at(path)
            ids = json.loads(layout.item_ids.read_text())
            codes = np.load(layout.item_codes)
            if len(ids) != codes.shape[0]:
                raise ValueError(f"item_ids.json has {len(ids)} ids, item_codes.npy has {codes.shape[0]} rows")
            if ids and ids[0] == "<pad>":
                ids, codes = ids[1:], codes[1:]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                ids, codes = [str(i) for i in z["item_ids"]], np.asarray(z["codes"])
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq
            table = pq.read_table(path, columns=["item_id", "codes"])
            ids = [str(i) for i in table.column("item_id").to_pylist()]
            codes = np.asarray(table.column("codes").to_pylist(), dtype=np.int64).reshape(len(ids), -1)
        else:
            raise ValueError("expected a run directory, .npz or .parquet")
    except (OSError, KeyError, ValueError) as exc:
        raise StreamConfigError(f"cannot read item codes from {path}: {exc}") from exc
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise StreamConfigError(f"item codes in {path} must be [N, L], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() > np.iinfo(np.uint16).max):
        raise StreamConfigError(f"item codes in {path} must fit uint16")
    return [str(i) for i in ids], codes.astype(np.uint16)


def load_codebook(path: str | os.PathLike | None) -> Any:
    """The codebook.npz at ``path`` (None for no path); an unreadable file is a StreamConfigError naming it."""
    if not path:
        return None
    from .codebook import ResidualCodebook
    try:
        return ResidualCodebook.load(path)
    except Exception as exc:
        raise StreamConfigError(f"cannot load codebook {path}: {exc}") from exc


def save_item_codes(path: str | os.PathLike, item_ids: Sequence[str], codes: np.ndarray) -> Path:
    """Write the item-codes table the processor reads (``.npz`` or ``.parquet`` by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codes = np.asarray(codes, dtype=np.uint16)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"item_id": [str(i) for i in item_ids],
                                 "codes": codes.astype(np.int64).tolist()}), path)
    else:
        np.savez(path, item_ids=np.asarray([str(i) for i in item_ids]), codes=codes)
    return path


def write_item_codes(store: OnlineStore, item_ids: Sequence[str], codes: np.ndarray,
                     path: str | os.PathLike | None = None, codebook_id: str = "") -> None:
    """Push item codes (fitted or refreshed codebook) into the ``item_codes`` feature view, and optionally write
    the table file the processor loads (``--item-codes``)."""
    codes = np.asarray(codes)
    if path is not None:
        save_item_codes(path, item_ids, codes)
    store.write_item_codes([str(i) for i in item_ids], codes, codebook_id=codebook_id)


EmbeddingSource = Mapping[str, np.ndarray] | Callable[[Sequence[str]], Mapping[str, np.ndarray]]


class ItemCodeMapper:
    """item id → codes [L]. An item missing from the table is looked up, in order:

    1. in ``published`` (a function ids → {id: codes}; the stream processor passes the online store's item-codes
       view, where the codebook-refresh DAG publishes new items' codes between retrains), so a new item's events
       are applied without restarting the processor;
    2. encoded with ``codebook.encode`` when ``embeddings`` has a vector for it (a mapping, or a function from ids
       to {id: vector}); those new codes are handed to the processor (:meth:`pop_new`) to be written to the store.

    An id found nowhere is asked again only after ``recheck_s`` (a flood of events for an unknown id costs one
    store read per ``recheck_s``, and a newly published item is picked up within that time)."""

    def __init__(self, item_ids: Sequence[str], codes: np.ndarray, codebook: Any = None,
                 embeddings: EmbeddingSource | None = None,
                 published: Callable[[list[str]], Mapping[str, np.ndarray]] | None = None, recheck_s: float = 10.0):
        codes = np.asarray(codes, dtype=np.uint16)
        if codes.ndim != 2 or len(item_ids) != codes.shape[0]:
            raise ValueError(f"codes must be [{len(item_ids)}, L], got {codes.shape}")
        self.n_layers = int(codes.shape[1])
        self._codes: dict[str, np.ndarray] = {str(i): codes[k] for k, i in enumerate(item_ids)}
        self.codebook = codebook
        self.embeddings = embeddings
        self.published = published
        self.recheck_s = float(recheck_s)
        self._new: dict[str, np.ndarray] = {}
        self._unknown_until: dict[str, float] = {}  # id -> monotonic time before which it is not asked again
        self.picked_up = 0  # items found in `published` (a metric for the processor)

    @classmethod
    def from_path(cls, path: str | os.PathLike, codebook: Any = None,
                  embeddings: EmbeddingSource | None = None) -> "ItemCodeMapper":
        ids, codes = load_item_codes(path)
        return cls(ids, codes, codebook, embeddings)

    def __len__(self) -> int:
        return len(self._codes)

    def _embeddings_for(self, ids: list[str]) -> dict[str, np.ndarray]:
        if self.embeddings is None or self.codebook is None or not ids:
            return {}
        if callable(self.embeddings):
            found = self.embeddings(ids) or {}
        else:
            found = {i: self.embeddings[i] for i in ids if i in self.embeddings}
        return {i: np.asarray(v, dtype=np.float32) for i, v in found.items() if v is not None}

    def _from_published(self, missing: list[str]) -> None:
        """Codes the refresh DAG published for ids the table lacks (store errors propagate: the processor retries
        the batch rather than sending its events to the DLQ)."""
        now = time.monotonic()
        ask = [i for i in missing if self._unknown_until.get(i, 0.0) <= now]
        if self.published is None or not ask:
            return
        found = self.published(ask) or {}
        for i, row in found.items():
            row = np.asarray(row)
            if row.shape != (self.n_layers,):
                log.warning("published codes for item %r have shape %s, table has L=%d: ignored", i[:64],
                            row.shape, self.n_layers)
                continue
            self._codes[str(i)] = row.astype(np.uint16)
            self._unknown_until.pop(str(i), None)
            self.picked_up += 1
        for i in ask:
            if i not in self._codes:
                self._unknown_until[i] = now + self.recheck_s
        if len(self._unknown_until) > 100_000:  # garbage ids must not grow memory without bound
            self._unknown_until = {i: t for i, t in self._unknown_until.items() if t > now}

    def lookup(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = set(item_ids)
        missing = [i for i in wanted if i not in self._codes]
        if missing:
            self._from_published(missing)
            missing = [i for i in missing if i not in self._codes]
        if missing:
            emb = self._embeddings_for(missing)
            if emb:
                ids = list(emb)
                enc = np.asarray(self.codebook.encode(np.stack([emb[i] for i in ids])))
                if enc.ndim != 2 or enc.shape[1] != self.n_layers:
                    raise ValueError(f"codebook encodes to shape {enc.shape}, table has L={self.n_layers}")
                for i, row in zip(ids, enc.astype(np.uint16)):
                    self._codes[i] = row
                    self._new[i] = row
        return {i: self._codes[i] for i in wanted if i in self._codes}

    def pop_new(self) -> dict[str, np.ndarray]:
        new, self._new = self._new, {}
        return new

    def push_back(self, new: dict[str, np.ndarray]) -> None:
        """Put back codes whose write failed, so the next batch retries the write."""
        self._new.update(new)
