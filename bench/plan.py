"""A bench plan: every dataset of the quality table with its own budget, seeds, peers and ablations, in one TOML
file, so that one command reproduces the whole table (``make bench-quality``):

    hymirec bench quality --plan bench/plans/quality.toml [--out DIR] [--data-dir DIR]

    out = "runs/bench-v3"              # default output folder (--out wins)
    ledger = "bench/ledger"       # committed copy of every finished record (--ledger wins; results.py)
    [defaults]                         # any of OPTION_TYPES; every [[dataset]] may override any of them
    time_budget = 400
    seeds = [0, 1, 2]
    [[dataset]]
    path = "amazon-games-2018"         # what --dataset takes: a name under the data dir, a path, FOLDER/NAME
    time_budget = 2400

The datasets run one after another, each under its own settings, into one --out; the report covers them all.
A re-run resumes: a (dataset, method, seed) already on disk under the same budget is not trained again.
Everything (keys, types, peers, ablation keys, overrides, every dataset) is checked before anything trains.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.datasets import BenchDataset, resolve_datasets
from bench.quality import BenchSettings, QualityBench, make_settings, seeds_for
from bench.report import print_summary

# option → the types it accepts (TOML gives int for 400 and float for 400.0)
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "peers": (str,), "seeds": (list,), "epochs": (int,), "time_budget": (int, float), "ablations": (bool,),
    "seeded_ablations": (list,), "only_ablations": (list,), "overrides": (list,),
    "multi_seed_max_interactions": (int,),
}
DEFAULT_PLAN = Path(__file__).resolve().parent / "plans" / "quality.toml"


class PlanError(ValueError):
    """A plan file that cannot be run as written (the message names the file and the entry)."""


@dataclass
class PlanEntry:
    dataset: str  # as written in the plan
    options: dict  # defaults merged with the entry's own


@dataclass
class BenchPlan:
    path: Path
    out: str | None
    entries: list[PlanEntry]
    ledger: str | None = None

    def out_dir(self, out: str | Path | None = None) -> Path:
        """--out if given, else the plan's out, else runs/bench."""
        return Path(out or self.out or "runs/bench")


def _check_options(options: dict, where: str) -> None:
    for key, value in options.items():
        if key not in OPTION_TYPES:
            raise PlanError(f"{where}: unknown option {key!r}; known: {', '.join(OPTION_TYPES)}")
        types = OPTION_TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise PlanError(f"{where}: {key} = {value!r} should be {' or '.join(t.__name__ for t in types)}")


def load_plan(path: str | Path) -> BenchPlan:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PlanError(f"plan {path}: not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"plan {path}: not valid TOML ({exc})") from exc
    unknown = set(raw) - {"out", "ledger", "defaults", "dataset"}
    if unknown:
        raise PlanError(f"plan {path}: unknown top-level key(s) {sorted(unknown)}; "
                        "known: out, ledger, defaults, [[dataset]]")
    defaults = raw.get("defaults", {})
    _check_options(defaults, f"plan {path} [defaults]")
    entries = []
    for i, entry in enumerate(raw.get("dataset", []), 1):
        where = f"plan {path} [[dataset]] #{i}"
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise PlanError(f"{where}: needs path = \"...\" (a dataset name under the data dir, or a path)")
        options = {k: v for k, v in entry.items() if k != "path"}
        _check_options(options, where)
        entries.append(PlanEntry(entry["path"], {**defaults, **options}))
    if not entries:
        raise PlanError(f"plan {path}: no [[dataset]] entries")
    for key in ("out", "ledger"):
        if key in raw and not isinstance(raw[key], str):
            raise PlanError(f"plan {path}: {key} = {raw[key]!r} should be a string")
    return BenchPlan(path, raw.get("out"), entries, raw.get("ledger"))


def plan_settings(plan: BenchPlan, out: str | Path, ledger: str | Path | None = None) -> list[BenchSettings]:
    """One checked BenchSettings per entry (a bad peer / ablation key / override names its entry)."""
    settings = []
    for i, entry in enumerate(plan.entries, 1):
        try:
            settings.append(make_settings(out, **entry.options, ledger=ledger))
        except ValueError as exc:
            raise PlanError(f"plan {plan.path} [[dataset]] #{i} ({entry.dataset}): {exc}") from exc
    return settings


def report_settings(plan: BenchPlan, datasets: list[BenchDataset], settings: list[BenchSettings]) -> dict:
    """The report's settings: the shared budget-rule fields plus each dataset's own (the legend reads these)."""
    first = settings[0].to_dict()
    return {"plan": str(plan.path), "dim": first["dim"], "max_len": first["max_len"], "topk": first["topk"],
            "seeds": first["seeds"], "ledger": first["ledger"],
            "per_dataset": {ds.key: {**s.to_dict(), "seeds_run": seeds_for(s, ds)}
                            for ds, s in zip(datasets, settings)}}


def run_plan(plan: BenchPlan, out: str | Path | None = None, data_dir: str | Path | None = None,
             log: Callable[[str], None] = print, report_only: bool = False, ledger: str | None = None,
             **fakes) -> dict:
    """Run (or resume) every entry of ``plan`` into one output folder; returns the results.json payload.
    ``report_only``: train nothing; the table lists what is still missing. ``ledger``: --ledger ("none": no
    ledger), else the plan's."""
    out = plan.out_dir(out)
    settings = plan_settings(plan, out, ledger or plan.ledger)
    datasets = []
    for i, entry in enumerate(plan.entries, 1):
        where = f"plan {plan.path} [[dataset]] #{i}"
        if entry.dataset == "all":
            raise PlanError(f"{where}: 'all' is not allowed in a plan (name each dataset, with its budget)")
        try:
            datasets += resolve_datasets([entry.dataset], Path(data_dir) if data_dir else None, log)
        except ValueError as exc:
            raise PlanError(f"{where}: {exc}") from exc
    keys = [ds.key for ds in datasets]
    if len(set(keys)) != len(keys):
        raise PlanError(f"plan {plan.path}: a dataset is listed twice ({keys})")
    scope = (datasets, report_settings(plan, datasets, settings))
    out.mkdir(parents=True, exist_ok=True)
    pending: list[str] = []
    for i, (ds, s) in enumerate(zip(datasets, settings), 1):
        log(f"[bench] ===== plan {plan.path.name}: dataset {i}/{len(datasets)}: {ds.key} "
            f"(≤ {s.epochs} epochs, ≤ {s.time_budget or 'no'} s, seeds {s.seeds}, peers "
            f"{[p.name for p in s.peers] or 'none'}) =====")
        bench = QualityBench([ds], s, log, report_scope=scope, report_only=report_only, **fakes)
        bench.run_dataset(ds)
        pending += bench.pending
    final = QualityBench(datasets, settings[0], log, report_scope=scope, report_only=report_only, **fakes)
    final.pending = pending
    return final.report()


def bench_quality_plan(plan_path: str | Path, out: str | None = None, data_dir: str | None = None,
                       log: Callable[[str], None] = print, report_only: bool = False,
                       ledger: str | None = None) -> int:
    """The command form: exit code 1 when some method failed (named in the table's legend)."""
    plan = load_plan(plan_path)
    payload = run_plan(plan, out, data_dir, log, report_only=report_only, ledger=ledger)
    print_summary(payload, plan.out_dir(out))
    return 1 if payload["failures"] else 0
