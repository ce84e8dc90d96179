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
    others = {label: m["NDCG@10"] for label, m in models.items() if not label.startswith("HyMiRec")}
    strongest = max(others, key=others.get)
    labels = [peer["label"] for peer in added]
    if strongest in labels and "HyMiRec" in models:  # the new strongest: a point gain, HyMiRec's lists not kept
        gain = models["HyMiRec"]["NDCG@10"] / others[strongest] - 1
        view.update(strongest=strongest, vs_strongest=format_gain(gain),
                    vs_strongest_pct={"gain": round(100 * gain, 2), "low": None, "high": None})
    _update_strongest_sasrec_check(record, models)
    record["setup"] += (f" Added on {today or time.strftime('%Y-%m-%d', time.gmtime())} from {out}'s peer runs on "
                        f"the same split (bench.mechanisms add-peer): {', '.join(labels)}; HyMiRec's gain over an "
                        "added row has no interval (its ranked lists are not in the record).")
    return labels


def _update_strongest_sasrec_check(record: dict, models: dict) -> None:
    """HyMiRec against the strongest SASRec (ours or a library's), recomputed over the view's models."""
    sasrecs = {("our SASRec" if label == "SASRec (ours)" else label): m["NDCG@10"]
               for label, m in models.items() if "SASRec" in label and not label.startswith("HyMiRec")}
    if not sasrecs or "HyMiRec" not in models:
        return
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
    record["reading"] = "; ".join(f"{c['comparison']}: {c['measured']} (goal {c['goal']})" for c in record["checks"])


def add_peers_to_file(record_path: Path, out: Path) -> list[str]:
    from bench.results_page import emit_area_record

    record = json.loads(Path(record_path).read_text())
    labels = add_peers(record, out)
    emit_area_record(record, record_path)
    return labels
