"""Runs that finish after their record was written join it without re-running what is in it: the converged
records (``python -m bench.mechanisms add-peer | add-warm-start | adopt-sasrec --record R``) and the SASRec sweep's
(``python -m bench.sasrec_sweep report --out SWEEP --amend R``).

Why: a converged run can take longer than a session (RecBole's SASRec on ML-100K ran past 100 epochs, paused and
resumed across sessions), and the runs a record was built from may be gone by then. Each amendment applies the
report's own rule to the record's numbers plus the new run's: a peer's row and the strongest model; HyMiRec and our
SASRec re-chosen on their own validation; a sweep column's point re-chosen on validation. Each is tested to give what
a full report over all the runs gives. The record's setup text says what was added and when; a gain over an added
model has no interval where HyMiRec's ranked lists are not at hand. A run of another dataset is refused by name.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bench.converged_view import (_valid_best, candidate_name, finished_peers, gain_percent, peer_model_entry,
                                  published_ndcg10, run_metrics, sasrec_settings)
from bench.mechanism_variants import BASE, HYMIREC_CANDIDATES
from bench.mechanisms_report import reading_of
from bench.paired import format_gain, run_gain_interval
from bench.peers.converged import PEER_PATIENCE
from bench.sasrec_sweep import LAYOUT_MEANING, default_point, finished_sweep, point_name, trained_patience


def _loo_cells(test: dict, valid: float | None, epochs: int | str) -> dict[str, str]:
    """A row's leave-one-out cells by column (the report's format)."""
    return {"LOO N@10": f"{test['NDCG@10']:.4f}", "LOO R@10": f"{test['Recall@10']:.4f}",
            "valid (W / LOO)": "– / " + ("–" if valid is None else f"{valid:.4f}"),
            "epochs (W / LOO)": f"– / {epochs}"}


def _row(label: str, cells: dict[str, str], columns: list[str]) -> list[str]:
    """A new row: its label, then its cells, "–" wherever the model was not measured."""
    return [label] + [cells.get(column, "–") for column in columns[1:]]


def add_peers(record: dict, out: Path, today: str | None = None, dataset: str | None = None) -> list[str]:
    """Add OUT's finished peers that ``record`` (a converged record, changed in place) lacks; returns their labels.
    Raises ValueError naming what is wrong: no converged view, another dataset's split, nothing to add.

    The record names a dataset by its folder ("amazon-games-2018, 10,000 random users"), the split by the data's own
    name ("Games-6k"): where they differ, ``dataset`` (the folder) must be the record's and load as the split's."""
    view = record.get("converged")
    if not view:
        raise ValueError(f"the record of {record.get('area', '?')!r} has no converged view to add a peer to")
    manifest = out / "leave_one_out" / "peers" / "split" / "manifest.json"
    split = json.loads(manifest.read_text()).get("dataset") if manifest.is_file() else None
    named = view["dataset"].split(",")[0]  # "ml-1m, 1,000 random users" ranked "ml-1m"
    if split is None or (named != split and not _folder_of(dataset, named, split)):
        raise ValueError(f"{manifest}: split of {split!r}, but the record is about {view['dataset']!r}"
                         + ("" if dataset else " (give the dataset folder, --dataset, where the names differ)"))
    models = view["models"]
    # new peers, and peers whose recorded run hit its epoch cap and that OUT has trained further (a higher --epochs)
    added = [peer for peer in finished_peers(out).values() if peer["label"] not in models
             or (models[peer["label"]].get("capped") and peer["epochs"] > models[peer["label"]]["epochs"])]
    if not added:
        raise ValueError(f"no finished peer in {out / 'leave_one_out' / 'peers'} that the record lacks "
                         f"(it has {', '.join(models)})")
    published = published_ndcg10(out)
    longer = {peer["label"]: models[peer["label"]]["epochs"] for peer in added if peer["label"] in models}
    for peer in added:
        models[peer["label"]] = peer_model_entry(peer, published)
        row = _row(peer["label"], _loo_cells(peer["test"], None, f"{peer['epochs']} (best {peer['best_epoch']})"),
                   record["columns"])
        record["rows"] = [r for r in record["rows"] if r[0] != peer["label"]] + [row]  # a longer run replaces its row
    labels = [peer["label"] for peer in added]
    _restrongest(view, set(labels))
    _update_strongest_sasrec_check(record, models)
    day = today or time.strftime('%Y-%m-%d', time.gmtime())
    new = [label for label in labels if label not in longer]
    if new:
        record["setup"] += (f" Added on {day} from {out}'s peer runs on the same split (bench.mechanisms add-peer): "
                            f"{', '.join(new)}; HyMiRec's gain over an added row has no interval (its ranked lists "
                            "are not in the record).")
    if longer:  # the row stays; what changed is how long it trained
        record["setup"] += (f" Replaced on {day} by a longer run of the same settings ({out}, a higher epoch cap), "
                            "the first having reached its cap: " + ", ".join(
                                f"{label} ({epochs} epochs before)" for label, epochs in longer.items()) + ".")
    return labels


def _folder_of(dataset: str | None, record_name: str, split_name: str) -> bool:
    """Whether the folder ``dataset`` is the record's dataset and its data is the split's (by name)."""
    from training.data import load_dataset

    return bool(dataset) and Path(dataset).name == record_name and load_dataset(dataset).name == split_name


def _restrongest(view: dict, changed: set[str], interval: tuple | None = None) -> None:
    """The strongest model besides HyMiRec, and HyMiRec's gain over it, where ``changed`` models moved them: with
    ``interval`` (HyMiRec against our SASRec, paired) where our SASRec is the strongest, else a point gain (HyMiRec's
    ranked lists are not in the record); where nothing moved, the gain and its interval stay."""
    models = view["models"]
    others = {label: m["NDCG@10"] for label, m in models.items() if not label.startswith("HyMiRec")}
    strongest = max(others, key=others.get)
    if "HyMiRec" in models and (strongest in changed or "HyMiRec" in changed or strongest != view["strongest"]):
        gain, low, high = (interval if interval and strongest == "SASRec (ours)"
                           else (models["HyMiRec"]["NDCG@10"] / others[strongest] - 1, None, None))
        view.update(strongest=strongest, vs_strongest=format_gain(gain, low, high),
                    vs_strongest_pct=gain_percent(gain, low, high))


def _update_strongest_sasrec_check(record: dict, models: dict) -> None:
    """HyMiRec against the strongest SASRec (ours or a library's), recomputed over the view's models."""
    sasrecs = {("our SASRec" if label == "SASRec (ours)" else label): m["NDCG@10"]
               for label, m in models.items() if "SASRec" in label and not label.startswith("HyMiRec")}
    if not sasrecs or "HyMiRec" not in models:
        return _reread(record)
    strongest = max(sasrecs, key=sasrecs.get)
    checks = record["checks"]
    ours = [i for i, c in enumerate(checks) if " vs our SASRec, " in c["comparison"]]
    if len(sasrecs) > 1 and ours and not any(" vs the strongest SASRec (" in c["comparison"] for c in checks):
        # the report names this check only once a library's SASRec competes: after the checks against ours
        head = checks[ours[0]]["comparison"].partition(" vs our SASRec, ")[0]
        checks.insert(ours[-1] + 1, {"comparison": f"{head} vs the strongest SASRec (", "measured": "",
                                        "goal": "≥ +10 %"})
    for check in checks:
        head, marker, _ = check["comparison"].partition(" vs the strongest SASRec (")
        if marker:
            check["comparison"] = f"{head}{marker}{strongest}), leave-one-out NDCG@10"
            check["measured"] = format_gain(models["HyMiRec"]["NDCG@10"] / sasrecs[strongest] - 1)
    _reread(record)


def _reread(record: dict) -> None:
    """The record's reading line from its checks, as the report writes it."""
    record["reading"] = reading_of(record["checks"])


# the converged view's checks against our SASRec, by the HyMiRec model each compares (mechanisms_report's wording)
OUR_SASREC_CHECKS = {"HyMiRec (preset": "HyMiRec", "HyMiRec without the SASRec warm start": "HyMiRec, ids from scratch",
                     "HyMiRec with items from their text only": "HyMiRec, text only (no id tables)"}


def _view_with_our_sasrec(record: dict) -> dict:
    view = record.get("converged")
    if not view or "SASRec (ours)" not in view["models"]:
        raise ValueError(f"the record of {record.get('area', '?')!r} has no converged view with our SASRec")
    return view


def _row_valid(record: dict, row: list[str]) -> float:
    """The leave-one-out validation score in a row's "valid (W / LOO)" cell ("– / 0.1183")."""
    cell = row[record["columns"].index("valid (W / LOO)")]
    try:
        return float(cell.split(" / ")[1])
    except (IndexError, ValueError):
        raise ValueError(f"the row {row[0]!r} has no validation score to weigh against ({cell!r})") from None


def _set_our_sasrec(record: dict, entry: dict, cells: dict[str, str]) -> None:
    """Our SASRec's row and view entry replaced, and every check against it recomputed (point gains)."""
    models = record["converged"]["models"]
    row = next(row for row in record["rows"] if row[0] == "SASRec (ours)")
    row[:] = [cells.get(column, cell) for column, cell in zip(record["columns"], row)]
    models["SASRec (ours)"] = entry
    for check in record["checks"]:
        model = next((m for prefix, m in OUR_SASREC_CHECKS.items() if check["comparison"].startswith(prefix)), None)
        if " vs our SASRec, " in check["comparison"] and model in models:
            check["measured"] = format_gain(models[model]["NDCG@10"] / entry["NDCG@10"] - 1)


def _patience(patience: int | None) -> dict:
    return {"patience": patience} if patience not in (None, PEER_PATIENCE) else {}


def adopt_sasrec(record: dict, summary: dict) -> bool:
    """Make the SASRec sweep's chosen point (OUT/sweep.json, on the record's split) the converged record's "SASRec
    (ours)" where it validates higher than the one there, as the report's rule has it (our SASRec is the one its own
    validation chose); its row, entry, HyMiRec's gains over it and the strongest model follow. Returns whether it
    replaced it. HyMiRec's warm start is not re-chosen: that needs a HyMiRec run from this SASRec (add-warm-start)."""
    view = _view_with_our_sasrec(record)
    if view["dataset"].split(",")[0] != summary["dataset"].split(",")[0]:
        raise ValueError(f"the sweep is on {summary['dataset']!r}, the record on {view['dataset']!r}")
    chosen = next(r for r in summary["points"] if r["point"] == summary["chosen"])
    earlier = _row_valid(record, next(row for row in record["rows"] if row[0] == "SASRec (ours)"))
    if round(chosen["valid_ndcg10"], 4) <= earlier:  # the row keeps 4 decimals: the same point again is no gain
        return False
    settings = sasrec_settings({"config": {"train": {f"sasrec_{key}": v for key, v in chosen["point"].items()}}})
    _set_our_sasrec(record, {"NDCG@10": chosen["test"]["NDCG@10"], "epochs": chosen["epochs"], "settings": settings,
                             **_patience(chosen.get("patience"))},
                    _loo_cells(chosen["test"], chosen["valid_ndcg10"], chosen["epochs"]))
    _restrongest(view, {"SASRec (ours)"})
    _update_strongest_sasrec_check(record, view["models"])
    record["setup"] += (f" Our SASRec re-chosen on {time.strftime('%Y-%m-%d', time.gmtime())} (bench.mechanisms "
                        f"adopt-sasrec): the sweep's {point_name(chosen['point'])} validates "
                        f"{chosen['valid_ndcg10']:.4f} against the earlier choice's {earlier:.4f}; "
                        "HyMiRec's gains over it have no interval (the sweep keeps no ranked lists), and HyMiRec's "
                        "warm start was chosen before this SASRec existed.")
    return True


def add_warm_start(record: dict, out: Path, variant: str = "preset") -> str:
    """OUT's preset run, warm-started from another SASRec (``run --suite warm-start``) after the record was written,
    or one of its dropout candidates (``variant``, HYMIREC_CANDIDATES, stage 2 alone on that preset's SASRec), joins
    it as the report's rules would have had it (converged_view.hymirec_choice, sasrec_choice): its row; HyMiRec
    re-chosen on HyMiRec's validation among the record's preset rows and it; our SASRec re-chosen on SASRec's
    validation with the preset run's. Where both chosen are OUT's, HyMiRec's gain over our SASRec gets its paired
    interval (the runs kept both ranked lists). Returns the new row's label."""
    view = _view_with_our_sasrec(record)
    base = out / "leave_one_out" / BASE["leave_one_out"]
    base_run = run_metrics(out, "leave_one_out", BASE["leave_one_out"])
    if base_run is None or "sasrec" not in base_run:
        raise ValueError(f"{base}: no finished preset run with its SASRec")
    if variant != BASE["leave_one_out"] and variant not in HYMIREC_CANDIDATES:
        raise ValueError(f"{variant!r} is not a candidate for HyMiRec's preset ({', '.join(HYMIREC_CANDIDATES)})")
    run, run_dir = run_metrics(out, "leave_one_out", variant), out / "leave_one_out" / variant
    if run is None:
        raise ValueError(f"{run_dir}: no finished run")
    if run.get("dataset", {}).get("name") != view["dataset"].split(",")[0]:
        raise ValueError(f"{run_dir} ran on {run.get('dataset', {}).get('name')!r}, the record is on "
                         f"{view['dataset']!r}")
    name, hymirec, train = candidate_name(run, variant), run["hymirec"], run["config"]["train"]
    label = f"HyMiRec preset, {name}"
    if any(row[0] == label for row in record["rows"]):
        raise ValueError(f"the record has a row {label!r} already")
    if "chosen on HyMiRec's validation (" not in view["models"]["HyMiRec"].get("settings", ""):
        raise ValueError("the record's HyMiRec was not chosen among warm starts (report without --warm-start-from): "
                         "rebuild it with `report --warm-start-from` instead")
    record["rows"].append(_row(label, _loo_cells(hymirec["test"], _valid_best(run), hymirec["epochs"]),
                               record["columns"]))
    candidates = {row[0]: _row_valid(record, row) for row in record["rows"]
                  if row[0] == "HyMiRec preset" or row[0].startswith("HyMiRec preset, ")}
    changed, models = set(), view["models"]
    if max(candidates, key=candidates.get) == label:  # HyMiRec's warm start, chosen on its validation
        before = models["HyMiRec"].get("settings", "").split(", chosen on")[0]
        others = ", ".join(f"{v:.4f}" for key, v in candidates.items() if key != label)
        models["HyMiRec"] = {"NDCG@10": hymirec["test"]["NDCG@10"], "epochs": hymirec["epochs"],
                             **_patience(train.get("patience")),
                             "settings": f"{name}, chosen on HyMiRec's validation ({_valid_best(run):.4f} vs {others})"}
        for check in record["checks"]:  # the checks name HyMiRec's warm start
            check["comparison"] = (check["comparison"].replace(f", {before})", f", {name})") if before else
                                   check["comparison"].replace("(preset + long history)",
                                                               f"(preset + long history, {name})"))
        changed.add("HyMiRec")
    else:  # the new run is one more candidate HyMiRec's choice was weighed against
        settings = models["HyMiRec"]["settings"]
        models["HyMiRec"]["settings"] = f"{settings[:-1]}, {_valid_best(run):.4f})"
    sasrec = base_run["sasrec"]  # the SASRec the candidate's ids started from: its base run trained it
    sasrec_valid = sasrec.get("valid_best", sasrec.get("valid_best_ndcg10"))
    earlier = _row_valid(record, next(row for row in record["rows"] if row[0] == "SASRec (ours)"))
    if sasrec_valid > earlier:  # our SASRec, chosen on its own validation
        _set_our_sasrec(record, {"NDCG@10": sasrec["test"]["NDCG@10"], "epochs": sasrec["epochs"],
                                 "settings": sasrec_settings(base_run),
                                 **_patience(base_run["config"]["train"].get("sasrec_patience"))},
                        _loo_cells(sasrec["test"], sasrec_valid, sasrec["epochs"]))
        changed.add("SASRec (ours)")
    # the run's SASRec is ours where it won, or where it is the same SASRec trained again (same settings, same score)
    ours = "SASRec (ours)" in changed or (
        models["SASRec (ours)"]["settings"] == sasrec_settings(base_run) and abs(sasrec_valid - earlier) < 5e-5)
    interval = run_gain_interval(run_dir, base, "hymirec", "sasrec") if ours and (
        models["HyMiRec"]["NDCG@10"] == hymirec["test"]["NDCG@10"]) else None
    for check in record["checks"]:
        if check["comparison"].startswith("HyMiRec (preset") and " vs our SASRec, " in check["comparison"]:
            check["measured"] = (format_gain(*interval) if interval else
                                 format_gain(models["HyMiRec"]["NDCG@10"] / models["SASRec (ours)"]["NDCG@10"] - 1))
    _restrongest(view, changed, interval)
    _update_strongest_sasrec_check(record, models)
    record["setup"] += (f" Added on {time.strftime('%Y-%m-%d', time.gmtime())} (bench.mechanisms add-warm-start, "
                        f"from {out}): the row {label!r}; HyMiRec and our SASRec re-chosen on their validation.")
    return label


def _cell_valid(cell: str) -> float | None:
    """"**0.1183 / 0.1000, 116 (66)**" → 0.1183; "—" → None."""
    return None if cell.strip("*") == "—" else float(cell.strip("*").split(" / ")[0])


def add_sweep_points(record: dict, summary: dict, today: str | None = None) -> str:
    """Add one finished sweep's points (OUT/sweep.json) to the SASRec sweep record's column of the same dataset and
    patience, re-choose that column's point on validation (bold) and rewrite its reading; returns the column.
    For points trained after the record was written, when the other points' runs are gone."""
    patience = sorted({trained_patience(r) for r in summary["points"]})
    wanted = [f"{summary['dataset']}, patience {'/'.join(map(str, patience))}", summary["dataset"]]
    label = next((c for c in wanted if c in record["columns"][1:]), None)
    if label is None:
        raise ValueError(f"the sweep record has no column {wanted[0]!r} (it has {', '.join(record['columns'][1:])})")
    column = record["columns"].index(label)
    rows = {row[0]: row for row in record["rows"]}
    default = point_name(default_point()) + " (default)"
    cells = {}
    for r in summary["points"]:
        name = point_name(r["point"])
        cells[default if name + " (default)" in rows else name] = (
            f"{r['valid_ndcg10']:.4f} / {r['test']['NDCG@10']:.4f}, {r['epochs']} ({r['best_epoch']})")
    added = [name for name, cell in cells.items() if not (name in rows and rows[name][column].strip("*") == cell)]
    if not added:
        raise ValueError(f"the {label} column has these points already")
    for name, cell in cells.items():
        row = rows.setdefault(name, [name] + ["—"] * (len(record["columns"]) - 1))
        if row not in record["rows"]:
            record["rows"].append(row)
        row[column] = cell
    before = next((row[0] for row in record["rows"] if row[column].startswith("**")), None)
    trained = [row for row in record["rows"] if _cell_valid(row[column]) is not None]
    # on a tie at the cells' 4 decimals the earlier choice stays (its exact score is not in the record)
    chosen = max(sorted(trained, key=lambda row: row[0] != before), key=lambda row: _cell_valid(row[column]))
    for row in trained:
        row[column] = row[column].strip("*")
    chosen[column] = f"**{chosen[column]}**"
    if chosen[0] == before:  # the column's choice and its reading stand
        return _noted(record, label, added, today)
    test = float(chosen[column].strip("*").split(" / ")[1].split(",")[0])
    versus = ""
    if default in rows and _cell_valid(rows[default][column]) is not None:
        base = float(rows[default][column].strip("*").split(" / ")[1].split(",")[0])
        versus = f" vs the default's {base:.4f} ({100 * (test / base - 1):+.1f} %)"
    readings = [part for part in record["reading"].split("; ") if not part.startswith(label + ": ")]
    readings.insert(column - 1, f"{label}: chosen {chosen[0].removesuffix(' (default)')}, test NDCG@10 {test:.4f}"
                    + versus)
    record["reading"] = "; ".join(readings)
    return _noted(record, label, added, today)


def _noted(record: dict, label: str, added: list[str], today: str | None = None) -> str:
    """The setup says which points joined (those new to the column, or changed) and what a layout setting named in
    them means where it does not say so yet."""
    unexplained = [key for key in LAYOUT_MEANING if key not in record["setup"] and any(key in name for name in added)]
    record["setup"] += (f" Added on {today or time.strftime('%Y-%m-%d', time.gmtime())} to the {label} column "
                        "(bench.sasrec_sweep report --amend): " + ", ".join(added) + "."
                        + "".join(f" {key}: {LAYOUT_MEANING[key]}." for key in unexplained))
    return label


def amend_file(record_path: Path, amend) -> object:
    """``amend(record)`` applied to the record at ``record_path``, written back in the page's format; nothing is
    written where it raises."""
    from bench.results_page import emit_area_record

    record = json.loads(Path(record_path).read_text())
    result = amend(record)
    emit_area_record(record, record_path)
    return result


# bench.mechanisms' steps that amend a converged record with a run finished after it:
# (record, OUT, sweep OUT, variants, dataset folder) → what was done (variants: add-warm-start's candidates, the
# preset by default)
CONVERGED_AMENDMENTS = {
    "add-peer": lambda record, out, sweep, variants, dataset: ", ".join(add_peers(record, out, dataset=dataset)),
    "add-warm-start": lambda record, out, sweep, variants, dataset: ", ".join(
        add_warm_start(record, out, variant) for variant in variants or ["preset"]),
    "adopt-sasrec": lambda record, out, sweep, variants, dataset: "adopted"
    if adopt_sasrec(record, finished_sweep(sweep)) else "kept",
}
