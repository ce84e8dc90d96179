"""Per-run result files of the quality bench (resume) and their mean ± std aggregation.

    OUT/<dataset>/results/<method>-seed<S>.json          one finished (dataset, method, seed), written at once
    OUT/<dataset>/results/<method>-seed<S>.failed.json   the last failure of one (retried by the next run)

A re-run with the same OUT skips every (dataset, method, seed) whose JSON exists.

The ledger (optional; the shipped plan's is bench/ledger, committed) keeps a copy of every finished record:

    LEDGER/<dataset>/<method>-seed<S>.json

OUT is scratch (git-ignored, gone with the checkout); the ledger is what lets a table that takes days of CPU be
built over several machines and sessions: a record in either place counts as done, and a record in OUT (newer,
this checkout's) wins over the ledger's copy of the same (dataset, method, seed).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.artifacts import write_json_atomic

KS = (10, 20, 50)
METRIC_FIELDS = tuple(f"Recall@{k}" for k in KS) + tuple(f"NDCG@{k}" for k in KS)
DIVERSITY_FIELDS = ("ILD@50", "clusters@50")
NUMERIC_FIELDS = METRIC_FIELDS + ("train_seconds", "infer_ms_per_user", "epochs_run") + DIVERSITY_FIELDS


class ResultStore:
    def __init__(self, out: str | Path, ledger: str | Path | None = None):
        self.out = Path(out)
        self.ledger = Path(ledger) if ledger else None

    def path(self, dataset: str, method: str, seed: int) -> Path:
        return self.out / dataset / "results" / f"{method}-seed{seed}.json"

    def failure_path(self, dataset: str, method: str, seed: int) -> Path:
        return self.out / dataset / "results" / f"{method}-seed{seed}.failed.json"

    def ledger_path(self, dataset: str, method: str, seed: int) -> Path | None:
        return self.ledger / dataset / f"{method}-seed{seed}.json" if self.ledger else None

    def _found(self, dataset: str, method: str, seed: int) -> Path | None:
        for path in (self.path(dataset, method, seed), self.ledger_path(dataset, method, seed)):
            if path is not None and path.is_file():
                return path
        return None

    def has(self, dataset: str, method: str, seed: int) -> bool:
        return self._found(dataset, method, seed) is not None

    def get(self, dataset: str, method: str, seed: int) -> dict | None:
        path = self._found(dataset, method, seed)
        return _read(path) if path else None

    def write(self, record: dict) -> Path:
        key = (record["dataset"], record["method"], int(record["seed"]))
        path = self.path(*key)
        write_json_atomic(path, record)
        if self.ledger:
            write_json_atomic(self.ledger_path(*key), record)
        self.failure_path(*key).unlink(missing_ok=True)
        return path

    def write_failure(self, dataset: str, method: str, seed: int, label: str, error: str) -> None:
        write_json_atomic(self.failure_path(dataset, method, seed),
                          {"dataset": dataset, "method": method, "seed": seed, "label": label, "error": error})

    def _glob(self, pattern: str, datasets: list[str] | None, root: Path | None = None) -> list[dict]:
        out = []
        glob = f"*/{pattern}" if root is not None else f"*/results/{pattern}"
        for path in sorted((root or self.out).glob(glob)):
            if path.name.endswith(".failed.json") != pattern.endswith(".failed.json"):
                continue
            dataset = path.parent.name if root is not None else path.parent.parent.name
            if datasets is None or dataset in datasets:
                out.append(_read(path))
        return out

    def records(self, datasets: list[str] | None = None) -> list[dict]:
        """OUT's records, and the ledger's for every (dataset, method, seed) OUT does not have."""
        found = {}
        for record in (self._glob("*.json", datasets, self.ledger) if self.ledger else []) + self._glob("*.json", datasets):
            found[(record["dataset"], record["method"], int(record["seed"]))] = record
        return list(found.values())

    def failures(self, datasets: list[str] | None = None) -> list[dict]:
        return self._glob("*.failed.json", datasets)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a valid result record ({exc}); fix or delete it to re-run that run") from exc


def flat_values(record: dict) -> dict[str, float]:
    """The numeric fields of one run record, flattened (metrics and diversity live in sub-dicts)."""
    values = {**record.get("metrics", {}), **(record.get("diversity") or {})}
    values.update({k: record.get(k) for k in ("train_seconds", "infer_ms_per_user", "epochs_run")})
    return {k: float(values[k]) for k in NUMERIC_FIELDS
            if values.get(k) is not None and not math.isnan(float(values[k]))}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(records: list[dict], method_order: list[str] | None = None) -> list[dict]:
    """One row per (dataset, method): ``mean``/``std`` per numeric field over its seeds, ``n_seeds``.

    Rows keep the datasets' first-seen order, methods in ``method_order`` (unknown ones last).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["dataset"], record["method"]), []).append(record)
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    order = {m: i for i, m in enumerate(method_order or [])}
    keys = sorted(groups, key=lambda k: (datasets.index(k[0]), order.get(k[1], len(order)), k[1]))
    rows = []
    for dataset, method in keys:
        runs = sorted(groups[(dataset, method)], key=lambda r: r["seed"])
        flats = [flat_values(r) for r in runs]
        row = {"dataset": dataset, "method": method, "label": runs[0].get("label", method),
               "kind": runs[0].get("kind", ""), "library": runs[0].get("library", ""),
               "item_representation": runs[0].get("item_representation"),
               "seeds": [r["seed"] for r in runs], "n_seeds": len(runs), "mean": {}, "std": {},
               "protocol_violations": sum(int(r.get("protocol_violations", 0)) for r in runs),
               "duplicate_items": sum(int(r.get("duplicate_items", 0)) for r in runs)}
        for field in NUMERIC_FIELDS:
            values = [f[field] for f in flats if field in f]
            if values:
                row["mean"][field], row["std"][field] = mean_std(values)
        rows.append(row)
    return rows
