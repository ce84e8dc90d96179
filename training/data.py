"""Interaction data: loading (layout detection), the synthetic generator, leave-one-out split, summary.

Public API (see docs/CONTRACTS.md):

* :class:`InteractionData`, :class:`DataFormatError` (defined in ``training.datasets.base``)
* :func:`load_dataset` — folder, file, ``<folder>/<stem>`` or the name ``"synthetic"``
* :func:`synthetic` — deterministic planted multi-interest data
* :func:`leave_one_out` → :class:`Split` of :class:`EvalSet`
* :func:`window_split` → :class:`WindowSplit` of :class:`WindowSet` (last W items per user as a target set)
* :func:`dataset_summary`

Item index 0 is padding everywhere; real items are 1..n_items.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.datasets.base import PAD_TOKEN, DataFormatError, InteractionData, read_lines
from training.datasets.loaders import (
    UNISREC_SPLITS,
    load_recbole,
    load_text,
    load_unisrec,
    unisrec_files,
)
from training.datasets.synthetic import synthetic
from training.datasets.window import WindowSet, WindowSplit, window_split

__all__ = [
    "PAD_TOKEN",
    "DataFormatError",
    "EvalSet",
    "InteractionData",
    "Split",
    "WindowSet",
    "WindowSplit",
    "dataset_summary",
    "leave_one_out",
    "load_dataset",
    "synthetic",
    "window_split",
]

# Files that sit next to datasets but are not interaction files (S3-Rec negatives, attribute maps ...).
_TEXT_SUFFIXES = (".txt",)
_IGNORED_TEXT = ("_sample.txt", "README.txt")


@dataclass
class EvalSet:
    """Evaluation users of one split.

    Attributes:
        users: ``int64 [U]`` user indices into ``InteractionData.sequences``.
        histories: per evaluated user, ``int64 [L_u]`` items before the target (chronological).
        targets: ``int64 [U]`` the held-out item per user.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    """Leave-one-out split.

    Attributes:
        train: one array per user (aligned with ``InteractionData.sequences``): ``seq[:-2]`` for users
            with ≥ 3 interactions, the whole sequence for shorter users (they are train-only).
        valid: history ``seq[:-2]``, target ``seq[-2]``.
        test: history ``seq[:-1]``, target ``seq[-1]``.
    """

    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet


def leave_one_out(data: InteractionData) -> Split:
    """Split every user's sequence: last item → test, second-to-last → valid, the rest → train."""
    train: list[np.ndarray] = []
    users, v_hist, v_tgt, t_hist, t_tgt = [], [], [], [], []
    for u, seq in enumerate(data.sequences):
        if len(seq) < 3:
            train.append(seq.copy())
            continue
        train.append(seq[:-2].copy())
        users.append(u)
        v_hist.append(seq[:-2].copy())
        v_tgt.append(seq[-2])
        t_hist.append(seq[:-1].copy())
        t_tgt.append(seq[-1])
    uarr = np.asarray(users, dtype=np.int64)
    return Split(
        train=train,
        valid=EvalSet(uarr, v_hist, np.asarray(v_tgt, dtype=np.int64)),
        test=EvalSet(uarr.copy(), t_hist, np.asarray(t_tgt, dtype=np.int64)),
    )


def dataset_summary(data: InteractionData) -> dict:
    """Counts for logs and ``dataset.json``: users, items, interactions, lengths, has_text."""
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    return {
        "name": data.name,
        "users": int(len(lengths)),
        "items": int(data.n_items),
        "interactions": int(lengths.sum()),
        "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
        "min_length": int(lengths.min()) if len(lengths) else 0,
        "max_length": int(lengths.max()) if len(lengths) else 0,
        "has_text": bool(data.has_text),
    }


def default_data_roots() -> list[Path]:
    """Where names (not paths) are looked up: ``$HYMIREC_DATA_DIR`` then ``<repo>/../shared/data``."""
    roots = []
    if os.environ.get("HYMIREC_DATA_DIR"):
        roots.append(Path(os.environ["HYMIREC_DATA_DIR"]))
    roots.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return roots


def load_dataset(path_or_name: str | os.PathLike, **synthetic_kwargs) -> InteractionData:
    """Load a dataset, detecting its layout. Reads only; never writes (no caches).

    Accepted forms:
      * a file: ``x.inter`` (RecBole atomic, or UniSRec when the header has ``item_id_list``),
        ``x.txt`` (S3-Rec / SASRec text);
      * a folder holding exactly one dataset;
      * ``<folder>/<stem>`` naming one dataset of a folder that holds several (``s3rec/Beauty``);
      * a bare name: ``"synthetic"`` (kwargs go to :func:`synthetic`) or a folder under
        :func:`default_data_roots` (``"ml-100k"``).

    Raises:
        FileNotFoundError: nothing exists at the path / name.
        DataFormatError: unknown layout, several datasets in a folder, or a malformed file.
    """
    if str(path_or_name) == "synthetic":
        return synthetic(**synthetic_kwargs)
    path = Path(path_or_name)
    if path.is_file():
        return _load_file(path)
    if path.is_dir():
        return _load_folder(path)
    stem_hit = _resolve_stem(path)
    if stem_hit is not None:
        return stem_hit
    if not path.is_absolute() and len(path.parts) == 1:
        for root in default_data_roots():
            if (root / path).exists():
                return load_dataset(root / path)
    raise FileNotFoundError(f"no dataset file or folder at {str(path)!r}")


def _inter_header(path: Path) -> list[str]:
    """Column names of a RecBole-style header (empty list for an empty file)."""
    for _, line in read_lines(path):
        return [c.partition(":")[0] for c in line.split("\t")]
    return []


def _load_file(path: Path) -> InteractionData:
    name = path.name
    if name.endswith(".inter"):
        for split in UNISREC_SPLITS:
            if name.endswith(f".{split}.inter"):
                return load_unisrec(path.with_name(name[: -len(f".{split}.inter")]))
        if "item_id_list" in _inter_header(path):
            return load_unisrec(path.with_name(name.removesuffix(".inter")))
        return load_recbole(path, path.with_name(name.removesuffix(".inter") + ".item"))
    if name.endswith(_TEXT_SUFFIXES):
        return load_text(path)
    raise DataFormatError(
        path, 0, "unknown layout: expected a RecBole/UniSRec '.inter' file or an S3-Rec/SASRec '.txt' file"
    )


def _resolve_stem(stem: Path) -> InteractionData | None:
    """``<folder>/<stem>`` → the dataset whose files start with that stem, if any."""
    if not stem.parent.is_dir():
        return None
    if unisrec_files(stem):
        return load_unisrec(stem)
    for suffix in (".inter", ".txt"):
        cand = stem.with_name(stem.name + suffix)
        if cand.is_file():
            return _load_file(cand)
    return None


def _folder_datasets(folder: Path) -> dict[str, Path]:
    """Dataset stem → the file to load, for every dataset found directly inside ``folder``."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        if p.name.endswith(".inter"):
            stem = p.name.removesuffix(".inter")
            for split in UNISREC_SPLITS:
                stem = stem.removesuffix(f".{split}")
            found.setdefault(stem, p)
        elif p.name.endswith(_TEXT_SUFFIXES) and not p.name.endswith(_IGNORED_TEXT):
            found.setdefault(p.name.removesuffix(p.suffix), p)
    return found


def _load_folder(folder: Path) -> InteractionData:
    found = _folder_datasets(folder)
    if not found:
        raise DataFormatError(
            folder, 0, "unknown layout: no '.inter' (RecBole/UniSRec) or '.txt' (S3-Rec/SASRec) file in folder"
        )
    if len(found) > 1:
        raise DataFormatError(
            folder, 0, f"folder holds several datasets ({', '.join(found)}): pass '<folder>/<name>' or a file"
        )
    return _load_file(next(iter(found.values())))
