"""Core data types shared by every loader: :class:`InteractionData` and :class:`DataFormatError`.

Kept free of any loader so that the loader modules (``recbole``, ``unisrec``, ``text``,
``synthetic``) can import it without a cycle through ``training.data``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

PAD_TOKEN = "<pad>"


class DataFormatError(ValueError):
    """A dataset file does not have the expected format.

    Attributes:
        path: the offending file (or folder, for layout-detection problems).
        line: 1-based line number; 0 means the file as a whole (e.g. empty file, unknown layout).
        problem: human-readable description of what is wrong.
    """

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.problem = problem
        super().__init__(f"{self.path}:{self.line}: {problem}")

    def __reduce__(self):  # keep it picklable (multiprocessing data loaders re-raise it)
        return (DataFormatError, (self.path, self.line, self.problem))


@dataclass
class InteractionData:
    """User interaction sequences with a dense item index (0 = padding).

    Attributes:
        name: dataset name (file stem or ``synthetic``).
        sequences: per user, ``int64 [L_u]`` item indices in ``1..n_items``, chronological.
        timestamps: per user, ``int64 [L_u]`` unix seconds (or the order index when the source has none).
        user_ids: raw user id per user index.
        item_ids: raw item id per item index; ``item_ids[0] == "<pad>"``.
        item_texts: text per item index (``item_texts[0] == ""``), None when the dataset has no text.
        item_categories: optional ``int64 [n_items+1]`` label per item (synthetic topics; -1 for padding).
        item_tags: optional category tokens per item index from the ``.item`` file's category column
            (MovieLens genres); ``item_tags[0] == ()``, ``()`` for an item without a row or without tags.
    """

    name: str
    sequences: list[np.ndarray]
    timestamps: list[np.ndarray] | None
    user_ids: list[str]
    item_ids: list[str]
    item_texts: list[str] | None
    item_categories: np.ndarray | None = field(default=None)
    item_tags: list[tuple[str, ...]] | None = field(default=None)

    @property
    def n_items(self) -> int:
        """Number of real items (embedding tables have ``n_items + 1`` rows)."""
        return len(self.item_ids) - 1

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def has_text(self) -> bool:
        return self.item_texts is not None and any(t for t in self.item_texts[1:])

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def validate(self) -> None:
        """Check internal consistency; raises ``ValueError`` (a programming error, not a file error)."""
        if not self.item_ids or self.item_ids[0] != PAD_TOKEN:
            raise ValueError("item_ids[0] must be the padding token '<pad>'")
        if len(self.user_ids) != len(self.sequences):
            raise ValueError(f"{len(self.user_ids)} user_ids for {len(self.sequences)} sequences")
        if self.timestamps is not None:
            if len(self.timestamps) != len(self.sequences):
                raise ValueError("timestamps and sequences differ in length")
            for u, (s, t) in enumerate(zip(self.sequences, self.timestamps)):
                if len(s) != len(t):
                    raise ValueError(f"user {u}: {len(s)} items but {len(t)} timestamps")
        if self.item_texts is not None and len(self.item_texts) != len(self.item_ids):
            raise ValueError("item_texts and item_ids differ in length")
        if self.item_categories is not None and len(self.item_categories) != len(self.item_ids):
            raise ValueError("item_categories and item_ids differ in length")
        if self.item_tags is not None and len(self.item_tags) != len(self.item_ids):
            raise ValueError("item_tags and item_ids differ in length")
        n = self.n_items
        for u, s in enumerate(self.sequences):
            if s.dtype != np.int64:
                raise ValueError(f"user {u}: sequence dtype {s.dtype}, expected int64")
            if len(s) and (s.min() < 1 or s.max() > n):
                raise ValueError(f"user {u}: item index outside 1..{n}")

    def to_frame(self) -> pd.DataFrame:
        """One row per interaction: ``user_id`` and ``item_id`` (raw strings), ``timestamp``, ``order``.

        ``order`` is the 0-based position of the interaction in the user's chronological sequence.
        """
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        users = np.repeat(np.array(self.user_ids, dtype=object), lengths)
        flat = np.concatenate(self.sequences) if self.sequences else np.zeros(0, np.int64)
        items = np.array(self.item_ids, dtype=object)[flat]
        order = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]) if len(lengths) else flat
        if self.timestamps is not None:
            ts = np.concatenate(self.timestamps) if self.timestamps else flat
        else:
            ts = order
        return pd.DataFrame(
            {"user_id": users, "item_id": items, "timestamp": ts.astype(np.int64), "order": order}
        )


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line without trailing newline/CR)``; non-UTF-8 → DataFormatError."""
    with open(path, "rb") as fh:
        for no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, no, f"not valid UTF-8 ({exc.reason})") from None
            yield no, line.rstrip("\r\n")


def parse_int(token: str, path: Path, line: int, what: str) -> int:
    """Parse a decimal integer id or raise DataFormatError naming the field."""
    try:
        return int(token)
    except ValueError:
        raise DataFormatError(path, line, f"{what} {token!r} is not an integer") from None


class ItemVocabulary:
    """Builds the raw id → dense index map (1..n) while loading.

    Indices are assigned at :meth:`finalize`: numerically sorted when every raw id is an integer
    (so already-dense S3-Rec/SASRec ids keep their value), else in order of first appearance.
    """

    def __init__(self) -> None:
        self._first_seen: dict[str, int] = {}

    def add(self, raw: str) -> int:
        """Register ``raw`` and return a provisional code (first-appearance order)."""
        code = self._first_seen.get(raw)
        if code is None:
            code = len(self._first_seen)
            self._first_seen[raw] = code
        return code

    def finalize(self) -> tuple[list[str], np.ndarray]:
        """Return ``(item_ids with "<pad>" at 0, remap [n_provisional] → dense index)``."""
        raws = list(self._first_seen)
        order = numeric_order(raws)
        remap = np.empty(len(raws), dtype=np.int64)
        remap[np.asarray(order, dtype=np.int64)] = np.arange(1, len(raws) + 1, dtype=np.int64)
        return [PAD_TOKEN] + [raws[i] for i in order], remap


def numeric_order(raws: list[str]) -> list[int]:
    """Positions of ``raws`` sorted numerically when all are integers, else the given order."""
    try:
        keys = [int(r) for r in raws]
    except ValueError:
        return list(range(len(raws)))
    return sorted(range(len(raws)), key=lambda i: keys[i])


def build_data(
    name: str,
    user_ids: list[str],
    codes: list[list[int]],
    times: list[list[float]] | None,
    index: ItemVocabulary,
    raw_texts: dict[str, str] | None,
    raw_tags: dict[str, tuple[str, ...]] | None = None,
) -> InteractionData:
    """Assemble :class:`InteractionData` from per-user provisional item codes (file order).

    Users are ordered numerically when every raw user id is an integer (else first appearance).
    Sorts each user's interactions by timestamp with a stable sort, so ties keep file order.
    """
    order = numeric_order(user_ids)
    user_ids = [user_ids[i] for i in order]
    codes = [codes[i] for i in order]
    times = None if times is None else [times[i] for i in order]
    item_ids, remap = index.finalize()
    sequences: list[np.ndarray] = []
    timestamps: list[np.ndarray] = []
    for u, c in enumerate(codes):
        seq = remap[np.asarray(c, dtype=np.int64)] if c else np.zeros(0, np.int64)
        if times is None:
            ts = np.arange(len(seq), dtype=np.int64)
        else:
            t = np.asarray(times[u], dtype=np.float64)
            perm = np.argsort(t, kind="stable")
            seq, ts = seq[perm], t[perm].astype(np.int64)
        sequences.append(seq)
        timestamps.append(ts)
    texts = None
    if raw_texts is not None:
        texts = [""] + [raw_texts.get(r, "") for r in item_ids[1:]]
    tags = None if raw_tags is None else [()] + [raw_tags.get(r, ()) for r in item_ids[1:]]
    data = InteractionData(name, sequences, timestamps, user_ids, item_ids, texts, item_tags=tags)
    data.validate()
    return data
