"""Which datasets the quality bench runs on, checked before anything trains, and their published numbers.

* ``--dataset all`` = every loadable dataset under the data directory (``../shared/data`` or
  ``$HYMIREC_DATA_DIR``); a folder holding several datasets (the S3-Rec files) counts as each of them.
* Any other folder/file (or ``FOLDER/NAME``) in a supported layout is accepted; anything else stops the
  bench with :class:`UnsupportedDatasetError` before the first model trains.
* Published full-ranking reference numbers (S3-Rec paper, ``../shared/data/README.md``) are attached to
  a dataset only when its name *and* its user/item counts match the S3-Rec file they were measured on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_DATASETS = ("ml-100k", "ml-1m", "amazon-games-2018", "s3rec-amazon-yelp-lastfm/Beauty",
                    "s3rec-amazon-yelp-lastfm/Sports_and_Outdoors", "s3rec-amazon-yelp-lastfm/Toys_and_Games")

SUPPORTED_LAYOUTS = ("RecBole atomic files (NAME.inter [+ NAME.item]), UniSRec splits (NAME.{train,valid,test}.inter "
                     "+ NAME.item), S3-Rec/SASRec text (NAME.txt: 'user item item ...' or 'user item' per line), "
                     "a folder holding one of these, or FOLDER/NAME for a folder holding several")

PUBLISHED_SOURCE = "S3-Rec (Zhou et al., CIKM 2020), full ranking, leave-one-out; HR@10 = R@10"
# dataset → (users, items) of the file the numbers were measured on, {model: (HR@10, NDCG@10)}
PUBLISHED: dict[str, tuple[tuple[int, int], dict[str, tuple[float, float]]]] = {
    "Beauty": ((22363, 12101), {"SASRec": (0.0605, 0.0318), "BERT4Rec": (0.0347, 0.0170), "S3-Rec": (0.0647, 0.0327)}),
    "Sports_and_Outdoors": ((35598, 18357),
                            {"SASRec": (0.0350, 0.0192), "BERT4Rec": (0.0191, 0.0099), "S3-Rec": (0.0385, 0.0204)}),
    "Toys_and_Games": ((19412, 11924),
                       {"SASRec": (0.0675, 0.0374), "BERT4Rec": (0.0203, 0.0099), "S3-Rec": (0.0700, 0.0376)}),
    "Yelp": ((30431, 20033), {"SASRec": (0.0274, 0.0136), "BERT4Rec": (0.0090, 0.0045), "S3-Rec": (0.0341, 0.0168)}),
    "LastFM": ((1090, 3646), {"SASRec": (0.0688, 0.0390), "BERT4Rec": (0.0633, 0.0337), "S3-Rec": (0.0743, 0.0427)}),
}


class UnsupportedDatasetError(ValueError):
    """A --dataset argument that is not a dataset in a supported layout."""


@dataclass(frozen=True)
class BenchDataset:
    key: str  # short unique name: folder name, or the stem for FOLDER/NAME
    spec: str  # what training.data.load_dataset / run_training get
    users: int
    items: int
    interactions: int
    has_text: bool

    @property
    def item_representation(self) -> str:
        return "content_encoder" if self.has_text else "item_id_embedding"


def default_data_dir() -> Path:
    if os.environ.get("HYMIREC_DATA_DIR"):
        return Path(os.environ["HYMIREC_DATA_DIR"])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _key(spec: str) -> str:
    name = Path(spec.rstrip("/")).name
    for suffix in (".txt", ".inter"):
        name = name.removesuffix(suffix)
    return name


def probe(spec: str) -> BenchDataset:
    """Load once (the loader's own checks) and keep only the counts; raise a clear error otherwise."""
    from training.data import DataFormatError, dataset_summary
    from training.train import load_run_data

    try:
        summary = dataset_summary(load_run_data(spec))
    except DataFormatError as exc:
        raise UnsupportedDatasetError(f"dataset {spec!r} cannot be read: {exc}. "
                                      f"Supported layouts: {SUPPORTED_LAYOUTS}") from exc
    except FileNotFoundError as exc:
        raise UnsupportedDatasetError(f"dataset {spec!r}: not found ({exc})") from exc
    return BenchDataset(key=_key(spec), spec=spec, users=summary["users"], items=summary["items"],
                        interactions=summary["interactions"], has_text=summary["has_text"])


def expand_all(data_dir: Path, log: Callable[[str], None] = print) -> list[str]:
    """Candidate datasets under ``data_dir`` (one level of folders; multi-dataset folders expanded)."""
    from training.data import _folder_datasets  # the loader's own notion of "datasets in a folder"

    if not data_dir.is_dir():
        raise UnsupportedDatasetError(f"--dataset all: data directory {data_dir} not found (set HYMIREC_DATA_DIR)")
    specs: list[str] = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        found = _folder_datasets(folder)
        if not found:
            log(f"[bench] skipping {folder.name}: no dataset file in a supported layout")
        specs += [str(folder)] if len(found) == 1 else [str(folder / stem) for stem in found]
    return specs


def resolve_datasets(args: list[str] | None, data_dir: Path | None = None,
                     log: Callable[[str], None] = print) -> list[BenchDataset]:
    """Command-line dataset arguments → checked datasets (all loaded once, nothing trained).

    ``None``/empty = :data:`DEFAULT_DATASETS`; ``all`` (unloadable folders skipped with a log line);
    ``synthetic``; a path; or a name under ``data_dir``. Anything else raises :class:`UnsupportedDatasetError`.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    specs: dict[str, bool] = {}  # spec → came from "all" (then an unloadable one is skipped, not fatal)
    for arg in args or [str(data_dir / name) for name in DEFAULT_DATASETS]:
        if arg == "all":
            for spec in expand_all(data_dir, log):
                specs.setdefault(spec, True)
        elif arg == "synthetic" or Path(arg).exists() or (len(Path(arg).parts) > 1 and Path(arg).parent.is_dir()):
            specs[arg] = False  # a path, or FOLDER/NAME of an existing folder
        elif (data_dir / arg).exists() or (data_dir / arg).parent.is_dir():
            specs[str(data_dir / arg)] = False
        else:
            raise UnsupportedDatasetError(f"dataset {arg!r}: no such file or folder (nor under {data_dir})")
    datasets: list[BenchDataset] = []
    for spec, from_all in specs.items():
        try:
            ds = probe(spec)
        except UnsupportedDatasetError as exc:
            if not from_all:
                raise
            log(f"[bench] skipping {spec}: {exc}")
            continue
        clash = next((d for d in datasets if d.key == ds.key), None)
        if clash:
            raise UnsupportedDatasetError(f"datasets {clash.spec!r} and {spec!r} share the name {ds.key!r}")
        log(f"[bench] dataset {ds.key}: {ds.users} users, {ds.items} items, {ds.interactions} interactions, "
            f"{'item text' if ds.has_text else 'no item text (item-id embedding in place of the content encoder)'}")
        datasets.append(ds)
    if not datasets:
        raise UnsupportedDatasetError(f"no loadable dataset in {args} (data directory {data_dir})")
    return datasets


def published_rows(ds: BenchDataset) -> list[dict]:
    """Reference rows for ``ds`` (empty unless it is the very file the numbers were published for)."""
    entry = PUBLISHED.get(ds.key)
    if entry is None or entry[0] != (ds.users, ds.items):
        return []
    return [{"dataset": ds.key, "method": f"published-{model.lower()}", "label": f"{model} (published)",
             "kind": "published", "source": PUBLISHED_SOURCE, "Recall@10": hr, "NDCG@10": ndcg}
            for model, (hr, ndcg) in entry[1].items()]
