"""A peer run that finished after its dataset's converged record was written joins that record
(``python -m bench.mechanisms add-peer --out OUT --record R``) without re-running the models already in it.

Why: a converged peer can take longer than a session (RecBole's SASRec on ML-100K ran past 100 epochs, paused and
resumed across sessions), and the HyMiRec runs the record was built from may be gone by then. The peer's row, its
entry in the converged view, the strongest model and HyMiRec's gain over it are recomputed from the record's own
numbers plus the peer's metrics.json; the setup text says which rows were added, when, and that HyMiRec's gain over
an added row has no interval (HyMiRec's ranked lists are not in the record). The peer must have ranked OUT's split,
the one the record's other peers ranked (its manifest is checked against the record's dataset).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bench.converged_view import finished_peers, peer_model_entry, published_ndcg10
from bench.paired import format_gain
from bench.peers.converged import PEER_PATIENCE


def _peer_row(peer: dict, columns: list[str]) -> list[str]:
    """The record's row for a peer: its leave-one-out cells, "–" wherever the peer was not measured."""
    cells = {"method": peer["label"], "LOO N@10": f"{peer['test']['NDCG@10']:.4f}",
             "LOO R@10": f"{peer['test']['Recall@10']:.4f}", "valid (W / LOO)": "– / –",
             "epochs (W / LOO)": f"– / {peer['epochs']} (best {peer['best_epoch']})"}
    return [cells.get(column, "–") for column in columns]


def add_peers(record: dict, out: Path, today: str | None = None) -> list[str]:
    """Add OUT's finished peers that ``record`` (a converged record, changed in place) lacks; returns their labels.
    Raises ValueError naming what is wrong: no converged view, another dataset's split, nothing to add."""
    view = record.get("converged")
    if not view:
        raise ValueError(f"the record of {record.get('area', '?')!r} has no converged view to add a peer to")
    manifest = out / "leave_one_out" / "peers" / "split" / "manifest.json"
    split = json.loads(manifest.read_text()).get("dataset") if manifest.is_file() else None
    if split is None or view["dataset"].split(",")[0] != split:  # "ml-1m, 1,000 random users" ranked "ml-1m"
        raise ValueError(f"{manifest}: split of {split!r}, but the record is about {view['dataset']!r}")
    models = view["models"]
    added = [peer for peer in finished_peers(out).values() if peer["label"] not in models]
    if not added:
        raise ValueError(f"no finished peer in {out / 'leave_one_out' / 'peers'} that the record lacks "
                         f"(it has {', '.join(models)})")
    published = published_ndcg10(out)
    for peer in added:
        models[peer["label"]] = peer_model_entry(peer, published)
        record["rows"].append(_peer_row(peer, record["columns"]))
    labels = [peer["label"] for peer in added]
    _restrongest(view, set(labels))
    _update_strongest_sasrec_check(record, models)
    record["setup"] += (f" Added on {today or time.strftime('%Y-%m-%d', time.gmtime())} from {out}'s peer runs on "
                        f"the same split (bench.mechanisms add-peer): {', '.join(labels)}; HyMiRec's gain over an "
                        "added row has no interval (its ranked lists are not in the record).")
    return labels


def _restrongest(view: dict, changed: set[str]) -> None:
    """The strongest model besides HyMiRec, and HyMiRec's gain over it, where ``changed`` models moved it: a point
    gain (HyMiRec's ranked lists are not in the record); otherwise the gain and its interval stay."""
    models = view["models"]
    others = {label: m["NDCG@10"] for label, m in models.items() if not label.startswith("HyMiRec")}
    strongest = max(others, key=others.get)
    if "HyMiRec" in models and (strongest in changed or strongest != view["strongest"]):
        gain = models["HyMiRec"]["NDCG@10"] / others[strongest] - 1
        view.update(strongest=strongest, vs_strongest=format_gain(gain),
                    vs_strongest_pct={"gain": round(100 * gain, 2), "low": None, "high": None})


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
    record["reading"] = "; ".join(f"{c['comparison']}: {c['measured']} (goal {c['goal']})" for c in record["checks"])


def add_peers_to_file(record_path: Path, out: Path) -> list[str]:
    from bench.results_page import emit_area_record

    record = json.loads(Path(record_path).read_text())
    labels = add_peers(record, out)
    emit_area_record(record, record_path)
    return labels


# the converged view's checks against our SASRec, by the HyMiRec model each compares (mechanisms_report's wording)
OUR_SASREC_CHECKS = {"HyMiRec (preset": "HyMiRec", "HyMiRec without the SASRec warm start": "HyMiRec, ids from scratch",
                     "HyMiRec with items from their text only": "HyMiRec, text only (no id tables)"}


def adopt_sasrec(record: dict, summary: dict) -> bool:
    """Make the SASRec sweep's chosen point (OUT/sweep.json, on the record's split) the converged record's "SASRec
    (ours)" where it validates higher than the one there, as the report's rule has it (our SASRec is the one its own
    validation chose); its row, entry, HyMiRec's gains over it and the strongest model follow. Returns whether it
    replaced it. HyMiRec's warm start is not re-chosen: that needs a HyMiRec run from this SASRec."""
    from bench.converged_view import sasrec_settings
    from bench.sasrec_sweep import point_name

    view = record.get("converged")
    if not view or "SASRec (ours)" not in view["models"]:
        raise ValueError(f"the record of {record.get('area', '?')!r} has no converged view with our SASRec")
    if view["dataset"].split(",")[0] != summary["dataset"].split(",")[0]:
        raise ValueError(f"the sweep is on {summary['dataset']!r}, the record on {view['dataset']!r}")
    chosen = next(r for r in summary["points"] if r["point"] == summary["chosen"])
    row = next(row for row in record["rows"] if row[0] == "SASRec (ours)")
    valid_at = record["columns"].index("valid (W / LOO)")
    try:
        earlier = float(row[valid_at].split(" / ")[1])
    except (IndexError, ValueError):
        raise ValueError(f"our SASRec's row has no validation score to weigh against ({row[valid_at]!r})") from None
    if chosen["valid_ndcg10"] <= earlier:
        return False
    cells = {"LOO N@10": f"{chosen['test']['NDCG@10']:.4f}", "LOO R@10": f"{chosen['test']['Recall@10']:.4f}",
             "valid (W / LOO)": f"– / {chosen['valid_ndcg10']:.4f}", "epochs (W / LOO)": f"– / {chosen['epochs']}"}
    row[:] = [cells.get(column, cell) for column, cell in zip(record["columns"], row)]
    models = view["models"]
    models["SASRec (ours)"] = {"NDCG@10": chosen["test"]["NDCG@10"], "epochs": chosen["epochs"],
                               "settings": sasrec_settings({"config": {"train": {
                                   f"sasrec_{key}": value for key, value in chosen["point"].items()}}}),
                               **({"patience": chosen["patience"]} if chosen.get("patience", PEER_PATIENCE)
                                  != PEER_PATIENCE else {})}
    for check in record["checks"]:
        model = next((m for prefix, m in OUR_SASREC_CHECKS.items() if check["comparison"].startswith(prefix)), None)
        if " vs our SASRec, " in check["comparison"] and model in models:
            check["measured"] = format_gain(models[model]["NDCG@10"] / chosen["test"]["NDCG@10"] - 1)
    _restrongest(view, {"SASRec (ours)"})
    _update_strongest_sasrec_check(record, models)
    record["setup"] += (f" Our SASRec re-chosen on {time.strftime('%Y-%m-%d', time.gmtime())} (bench.mechanisms "
                        f"adopt-sasrec): the sweep's {point_name(chosen['point'])} validates "
                        f"{chosen['valid_ndcg10']:.4f} against the earlier choice's {earlier:.4f}; "
                        "HyMiRec's gains over it have no interval (the sweep keeps no ranked lists), and HyMiRec's "
                        "warm start was chosen before this SASRec existed.")
    return True


def _cell_valid(cell: str) -> float | None:
    """"**0.1183 / 0.1000, 116 (66)**" → 0.1183; "—" → None."""
    return None if cell.strip("*") == "—" else float(cell.strip("*").split(" / ")[0])


def add_sweep_points(record: dict, summary: dict, today: str | None = None) -> str:
    """Add one finished sweep's points (OUT/sweep.json) to the SASRec sweep record's column of the same dataset and
    patience, re-choose that column's point on validation (bold) and rewrite its reading; returns the column.
    For points trained after the record was written, when the other points' runs are gone."""
    from bench.sasrec_sweep import default_point, point_name, trained_patience

    patience = sorted({trained_patience(r) for r in summary["points"]})
    wanted = [f"{summary['dataset']}, patience {'/'.join(map(str, patience))}", summary["dataset"]]
    label = next((c for c in wanted if c in record["columns"][1:]), None)
    if label is None:
        raise ValueError(f"the sweep record has no column {wanted[0]!r} (it has {', '.join(record['columns'][1:])})")
    column = record["columns"].index(label)
    rows = {row[0]: row for row in record["rows"]}
    default = point_name(default_point()) + " (default)"
    for r in summary["points"]:
        name = point_name(r["point"])
        name = default if name + " (default)" in rows else name
        row = rows.setdefault(name, [name] + ["—"] * (len(record["columns"]) - 1))
        if row not in record["rows"]:
            record["rows"].append(row)
        row[column] = f"{r['valid_ndcg10']:.4f} / {r['test']['NDCG@10']:.4f}, {r['epochs']} ({r['best_epoch']})"
    trained = [row for row in record["rows"] if _cell_valid(row[column]) is not None]
    chosen = max(trained, key=lambda row: _cell_valid(row[column]))
    for row in trained:
        row[column] = row[column].strip("*")
    chosen[column] = f"**{chosen[column]}**"
    test = float(chosen[column].strip("*").split(" / ")[1].split(",")[0])
    versus = ""
    if default in rows and _cell_valid(rows[default][column]) is not None:
        base = float(rows[default][column].strip("*").split(" / ")[1].split(",")[0])
        versus = f" vs the default's {base:.4f} ({100 * (test / base - 1):+.1f} %)"
    readings = [part for part in record["reading"].split("; ") if not part.startswith(label + ": ")]
    readings.insert(column - 1, f"{label}: chosen {chosen[0].removesuffix(' (default)')}, test NDCG@10 {test:.4f}"
                    + versus)
    record["reading"] = "; ".join(readings)
    record["setup"] += (f" Added on {today or time.strftime('%Y-%m-%d', time.gmtime())} to the {label} column "
                        "(bench.sasrec_sweep report --amend): "
                        + ", ".join(point_name(r["point"]) for r in summary["points"]) + ".")
    return label


def add_sweep_points_to_file(record_path: Path, outs: list[Path]) -> list[str]:
    from bench.results_page import emit_area_record

    record = json.loads(Path(record_path).read_text())
    labels = [add_sweep_points(record, json.loads((Path(out) / "sweep.json").read_text())) for out in outs]
    emit_area_record(record, record_path)
    return labels


def adopt_sasrec_in_file(record_path: Path, sweep_out: Path) -> bool:
    from bench.results_page import emit_area_record

    record = json.loads(Path(record_path).read_text())
    adopted = adopt_sasrec(record, json.loads((Path(sweep_out) / "sweep.json").read_text()))
    if adopted:
        emit_area_record(record, record_path)
    return adopted
