"""The users a user-cut run never saw: two trained runs scored again on the rest of the dataset, paired.

The mechanisms bench trains on 1,000 random ML-1M users (CPU), so its test set is 1,000 users and a
leave-one-out NDCG@10 gain of ±10 % sits inside the noise. The models are sequential (a user is its history), so
they rank the other 5,040 users too. This re-scores two finished runs of one ``--out`` on those users, under the
runs' own protocol, with the evaluator's serving-equivalent merge (training/evaluate.py), and a paired bootstrap
interval over them (bench/paired.py). Nothing is chosen here: the runs are the ones validation chose.

Held-out users are mapped into the run's item index; items the run never saw (no kept user rated them) are
dropped from their sequences before the split (the record says how many). What this narrows is the test-sample
noise of two trained models; a second training seed is a different question.

    python -m bench.heldout_users compare --dataset ../shared/data/ml-1m --out runs/mech1m-longloo \\
        --protocol leave_one_out --a preset --b preset-recent-only       # → OUT/heldout-<protocol>-<a>-vs-<b>.json
    python -m bench.heldout_users compare ... --a preset --b preset:sasrec   # a run's HyMiRec vs the SASRec it trained
    python -m bench.heldout_users record --json J1 --json J2 --record bench/records/mechanisms-ml-1m-heldout.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.paired import format_gain, ndcg10_per_user, paired_gain_interval, window_recall50_per_user
from core.artifacts import RunLayout, write_json_atomic


MAX_DROPPED_SHARE = 0.05  # past this, the held-out users are not the run's population (ML-1M's cut: 0.15 %)


@dataclass
class HeldOut:
    """The held-out users' sequences in one run's item index, and what the mapping dropped."""

    data: object  # InteractionData: sequences over the run's items
    users: int
    items_dropped: int  # interactions whose item the run's vocabulary lacks
    interactions: int


def heldout_users(full, seen_user_ids: set[str], run_item_ids: list[str],
                  max_dropped_share: float = MAX_DROPPED_SHARE) -> HeldOut:
    """``full`` (InteractionData of the whole dataset) minus ``seen_user_ids``, its items mapped to the run's index
    ``run_item_ids`` (``[0] == "<pad>"``); interactions with items outside it dropped (at most
    ``max_dropped_share`` of them, else the run is not from this dataset)."""
    from training.datasets.base import InteractionData

    if not run_item_ids or run_item_ids[0] != "<pad>":
        raise ValueError("run item ids must start with '<pad>' (a run's item_ids.json)")
    strangers = seen_user_ids - set(full.user_ids)
    if strangers:
        raise ValueError(f"{len(strangers):,} of the run's {len(seen_user_ids):,} users are not in {full.name!r} "
                         f"(e.g. {sorted(strangers)[0]!r}): the run's cut was not taken from this dataset")
    index = {raw: i for i, raw in enumerate(run_item_ids) if i}
    to_run = np.array([index.get(raw, 0) for raw in full.item_ids], dtype=np.int64)
    sequences, user_ids, dropped, total = [], [], 0, 0
    for raw_user, seq in zip(full.user_ids, full.sequences):
        if raw_user in seen_user_ids:
            continue
        mapped = to_run[seq]
        total += len(mapped)
        dropped += int((mapped == 0).sum())
        sequences.append(mapped[mapped > 0])
        user_ids.append(raw_user)
    if not sequences:
        raise ValueError("every user of the dataset is in the run's cut: nobody is held out")
    if dropped > max_dropped_share * total:
        raise ValueError(f"{100 * dropped / total:.1f} % of the held-out interactions are items the run never saw "
                         f"(more than {100 * max_dropped_share:.0f} %): its item index is not this dataset's")
    data = InteractionData(name=f"{full.name}-heldout", sequences=sequences, timestamps=None, user_ids=user_ids,
                           item_ids=list(run_item_ids), item_texts=None)
    return HeldOut(data, len(sequences), dropped, total)


def parse_model(spec: str) -> tuple[str, str]:
    """A compared model: "preset" → ("preset", "hymirec"), the run's HyMiRec; "preset:sasrec" → the SASRec
    baseline trained in that run (its sasrec.pt, on the same users and split)."""
    run, _, method = spec.partition(":")
    if not run or method not in ("", "hymirec", "sasrec"):
        raise ValueError(f"{spec!r}: expected RUN or RUN:sasrec (RUN a variant of the --out, e.g. preset)")
    return run, method or "hymirec"


def _sasrec_lists(run_dir: Path, state, test, protocol: str) -> np.ndarray:
    """The run's SASRec baseline's top-100 lists for ``test`` (the evaluator's masking rule, as HyMiRec's)."""
    import torch

    from training.evaluate import DEFAULT_KS, sasrec_test
    from training.protocols import sasrec_window_test
    from training.sasrec import SASRec
    from training.train import sasrec_config

    layout = RunLayout.at(run_dir)
    if not layout.sasrec.is_file():
        raise FileNotFoundError(f"{run_dir}: no sasrec.pt (the run trained no SASRec baseline)")
    model = SASRec(state.data.n_items, sasrec_config(state.config, state.data.has_text))
    model.load_state_dict(torch.load(layout.sasrec, map_location="cpu", weights_only=True))
    if protocol == "window":
        return sasrec_window_test(model, test)[1]
    return sasrec_test(model, test, max(DEFAULT_KS), rankable_targets=True)[1]


def score_heldout(run_dir: Path, full, method: str = "hymirec") -> dict:
    """One run's HyMiRec (or its SASRec baseline, ``method="sasrec"``) on the dataset's users outside its cut:
    {"metrics", "per_user" [U] (LOO NDCG@10 or window Recall@50), "users", "items_dropped", "interactions",
    "protocol"}."""
    from training.evaluate import DEFAULT_KS, evaluate_rankings, topk_from_interests
    from training.protocols import hybrid_window_test, list_window_metrics, make_split, window_labels
    from training.stage2 import predict_interests

    from training.train import load_trained_run

    state, item_emb, tables, model = load_trained_run(run_dir)
    seen = set(state.data.user_ids)
    held = heldout_users(full, seen, list(state.data.item_ids))
    protocol = state.config.train.protocol
    test = make_split(held.data, protocol, state.config.train.eval_window).test
    if protocol == "window":
        labels = window_labels(state)  # the run's items, so the run's labels
        if method == "sasrec":
            topk = _sasrec_lists(run_dir, state, test, protocol)
            metrics = list_window_metrics(topk, test, labels.matrix)
        else:
            metrics, quota, topk, _ = hybrid_window_test(model, tables, test, labels.matrix, item_emb)
            metrics = {**metrics, **{f"quota {k}": v for k, v in quota.items() if k in ("Recall@50", "Coverage@50")}}
        per_user = window_recall50_per_user(topk, test.targets)
    else:  # the evaluator's rule (a re-consumed target stays rankable), so per-user scores average to its metrics
        if method == "sasrec":
            topk = _sasrec_lists(run_dir, state, test, protocol)
        else:
            interests = predict_interests(model, tables, test.histories)
            vectors = model.item_vectors(tables.exact).float().numpy()
            topk = topk_from_interests(interests, vectors, test.histories, max(DEFAULT_KS), test.targets)
        metrics = evaluate_rankings(topk, test.targets)
        per_user = ndcg10_per_user(topk, test.targets)
    return {"protocol": protocol, "metrics": metrics, "per_user": per_user, "users": len(test),
            "user_ids": [held.data.user_ids[u] for u in test.users],
            "items_dropped": held.items_dropped, "interactions": held.interactions}


def compare_heldout(out: Path, protocol: str, a: str, b: str, dataset: str) -> dict:
    """Models ``a`` and ``b`` (:func:`parse_model`: a run of ``out/<protocol>/``, or its SASRec) on the held-out
    users: each one's metrics, and a vs b paired; beside it the same comparison on the runs' own test users (their
    saved lists)."""
    from bench.converged_view import sasrec_settings
    from bench.paired import run_gain
    from training.train import load_run_data

    models = {spec: parse_model(spec) for spec in (a, b)}
    seeds = {json.loads(RunLayout.at(out / protocol / run).config.read_text())["train"]["seed"]
             for run, _ in models.values()}
    if len(seeds) > 1:
        raise ValueError(f"{a} and {b} were trained with different seeds {sorted(seeds)}: not one replicate")
    full = load_run_data(dataset)
    scored = {spec: score_heldout(out / protocol / run, full, method) for spec, (run, method) in models.items()}
    if scored[a]["user_ids"] != scored[b]["user_ids"]:
        raise ValueError(f"{a} and {b} hold out different users (another cut or protocol): not a paired comparison")
    gain, low, high = paired_gain_interval(scored[a]["per_user"], scored[b]["per_user"])
    metric = "window Recall@50" if protocol == "window" else "leave-one-out NDCG@10"
    own = {}
    for spec, (run, method) in models.items():
        layout = RunLayout.at(out / protocol / run)
        m = json.loads(layout.metrics.read_text())[method]
        own[spec] = {"own_test": m["test"], "epochs": m["epochs"],  # a SASRec's: its next-item validation NDCG@10
                     "valid_best": m["valid_best"] if method == "hymirec" else m["valid_best_ndcg10"]}
        if method == "sasrec":  # which SASRec: the run's settings (default or chosen on validation) matter
            own[spec]["settings"] = sasrec_settings({"config": json.loads(layout.config.read_text())})
    (run_a, method_a), (run_b, method_b) = models[a], models[b]
    return {
        "dataset": dataset, "out": str(out), "protocol": protocol, "metric": metric, "a": a, "b": b,
        "seed": seeds.pop(),
        "heldout_users": scored[a]["users"], "interactions": scored[a]["interactions"],
        "interactions_dropped": scored[a]["items_dropped"],
        "runs": {spec: {"heldout": s["metrics"], **own[spec]} for spec, s in scored.items()},
        "gain": gain, "low": low, "high": high, "reading": format_gain(gain, low, high),
        "own_test_reading": run_gain(out / protocol / run_a, out / protocol / run_b, method_a, method_b),
    }


# what a pair of mechanisms-bench variants compares, in the words of the mechanisms report's checks
COMPARISONS = {("preset", "preset-recent-only"): "long coded history vs recent only (preset, K=1)",
               ("preset", "preset:sasrec"): "HyMiRec preset vs the SASRec it started from (same run)",
               ("k1", "k1-recent-only"): "long coded history vs recent only (K=1)",
               ("k1", "k1-exact"): "codes vs exact embeddings (K=1)",
               ("k3-residual", "k1"): "K=3 residual interests vs K=1"}


def comparison_name(a: str, b: str, seed: int = 0) -> str:
    """"long coded history vs recent only (K=1): k1 vs k1-recent-only", or "a vs b" for a pair not named; a
    replicate's training seed after it."""
    name = COMPARISONS.get((a, b))
    return (f"{name}: {a} vs {b}" if name else f"{a} vs {b}") + (f", seed {seed}" if seed else "")


RECORD_COLUMNS = ["comparison (a vs b)", "metric", "held-out users", "a held-out", "b held-out", "gain, held-out",
                  "a own test", "b own test", "gain, own test", "a / b valid"]


def heldout_record(results: list[dict], command: str, machine: str, measured_at: str) -> dict:
    """The results page's record of :func:`compare_heldout` results (bench/records/, a mechanisms area)."""
    if not results:
        raise ValueError("no held-out comparisons to record")
    key = {"window": "Recall@50", "leave_one_out": "NDCG@10"}
    rows, pairs = [], [(r["a"], r["b"], r.get("seed", 0)) for r in results]
    # one pair and seed from two --out folders (runs warm-started from different SASRecs): the folder tells them apart
    where = [f" ({Path(r['out']).name})" if pairs.count(pair) > 1 else "" for r, pair in zip(results, pairs)]
    for r, at in zip(results, where):
        ra, rb, k = r["runs"][r["a"]], r["runs"][r["b"]], key[r["protocol"]]
        rows.append([comparison_name(r["a"], r["b"], r.get("seed", 0)) + at, r["metric"], f"{r['heldout_users']:,}",
                     f"{ra['heldout'][k]:.4f}", f"{rb['heldout'][k]:.4f}", r["reading"], f"{ra['own_test'][k]:.4f}",
                     f"{rb['own_test'][k]:.4f}", r["own_test_reading"],
                     f"{ra['valid_best']:.4f} / {rb['valid_best']:.4f}"])
    dropped = sum(r["interactions_dropped"] for r in results) / max(1, sum(r["interactions"] for r in results))
    sasrecs = sorted({f"{spec} of {Path(r['out']).name}: {r['runs'][spec].get('settings', 'not recorded')}"
                      for r in results for spec in (r["a"], r["b"]) if spec.endswith(":sasrec")})
    name = Path(results[0]["dataset"]).name
    return {
        "area": f"Mechanisms: the user-cut runs scored on the users outside their cut ({name}, paired)",
        "measured_at": measured_at, "machine": machine, "command": command,
        "setup": ("The runs of the mechanisms bench (each trained on a random cut of the users, --max-users, and "
                  "chosen on its validation, "
                  "unchanged here) rank every other user of the dataset under their own protocol "
                  "(bench/heldout_users.py): a sequential model needs only the user's history. Items no kept user "
                  f"rated are dropped from those histories ({100 * dropped:.2f} % of their interactions). Intervals: "
                  "95 % paired bootstrap over the users. This narrows the test-sample noise of the same two trained "
                  "models; each row is one training seed (a replicate's row names its seed). Own test: the same two "
                  "runs on their cut's test users." + (
                      " RUN:sasrec is the SASRec baseline trained in that run (HyMiRec's warm start there, on the same "
                      "users and split; its valid: next-item NDCG@10; settings: " + "; ".join(sasrecs) + ")."
                      if sasrecs else "")),
        "columns": RECORD_COLUMNS, "rows": rows,
        "reading": "; ".join(f"{COMPARISONS.get((r['a'], r['b']), r['a'] + ' vs ' + r['b'])}"
                             + (f" (seed {r['seed']})" if r.get("seed") else "") + at + f", {r['metric']}: "
                             f"{r['reading']} on {r['heldout_users']:,} held-out users ({r['own_test_reading']} on "
                             "the cut's own test users)" for r, at in zip(results, where)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("compare", "record"))
    parser.add_argument("--dataset", help="compare: the whole dataset the runs' cut was taken from")
    parser.add_argument("--out", type=Path, help="compare: the mechanisms bench --out holding both runs")
    parser.add_argument("--protocol", choices=("leave_one_out", "window"))
    parser.add_argument("--a", help="compare: the variant run compared (RUN:sasrec: the SASRec trained in it)")
    parser.add_argument("--b", help="compare: the variant run it is compared with (or RUN:sasrec)")
    parser.add_argument("--json", type=Path, action="append", default=[],
                        help="compare: where to write (default OUT/heldout-<protocol>-<a>-vs-<b>.json); "
                             "record: the compare results to record (repeatable)")
    parser.add_argument("--record", type=Path, help="record: bench/records/<area>.json")
    parser.add_argument("--command", default="make bench-mechanisms")
    parser.add_argument("--machine", default="development machine kind (2 CPU cores, 24 GiB, no GPU)")
    args = parser.parse_args(argv)
    if args.step == "record":
        import datetime

        from bench.results_page import emit_area_record

        results = [json.loads(path.read_text()) for path in args.json]
        emit_area_record(heldout_record(results, args.command, args.machine, datetime.date.today().isoformat()),
                         args.record)
        return 0
    missing = [flag for flag in ("dataset", "out", "protocol", "a", "b") if getattr(args, flag) is None]
    if missing:
        parser.error("compare needs " + ", ".join(f"--{m}" for m in missing))
    result = compare_heldout(args.out, args.protocol, args.a, args.b, args.dataset)
    names = [spec.replace(":", "-") for spec in (args.a, args.b)]
    path = args.json[0] if args.json else args.out / f"heldout-{args.protocol}-{names[0]}-vs-{names[1]}.json"
    write_json_atomic(path, result)
    print(f"[heldout] {result['a']} vs {result['b']}, {result['metric']}, {result['heldout_users']:,} held-out users: "
          f"{result['reading']} (own test: {result['own_test_reading']}) → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
