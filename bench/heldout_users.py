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


def score_heldout(run_dir: Path, full) -> dict:
    """One run on the dataset's users outside its cut: {"metrics", "per_user" [U] (LOO NDCG@10 or window
    Recall@50), "users", "items_dropped", "interactions", "protocol"}."""
    from training.evaluate import DEFAULT_KS, evaluate_rankings, topk_from_interests
    from training.protocols import hybrid_window_test, make_split, window_labels
    from training.stage2 import predict_interests

    from training.train import load_trained_run

    state, item_emb, tables, model = load_trained_run(run_dir)
    seen = set(state.data.user_ids)
    held = heldout_users(full, seen, list(state.data.item_ids))
    protocol = state.config.train.protocol
    test = make_split(held.data, protocol, state.config.train.eval_window).test
    if protocol == "window":
        labels = window_labels(state)  # the run's items, so the run's labels
        metrics, quota, topk, _ = hybrid_window_test(model, tables, test, labels.matrix, item_emb)
        metrics = {**metrics, **{f"quota {k}": v for k, v in quota.items() if k in ("Recall@50", "Coverage@50")}}
        per_user = window_recall50_per_user(topk, test.targets)
    else:  # the evaluator's rule (a re-consumed target stays rankable), so per-user scores average to its metrics
        interests = predict_interests(model, tables, test.histories)
        vectors = model.item_vectors(tables.exact).float().numpy()
        topk = topk_from_interests(interests, vectors, test.histories, max(DEFAULT_KS), test.targets)
        metrics = evaluate_rankings(topk, test.targets)
        per_user = ndcg10_per_user(topk, test.targets)
    return {"protocol": protocol, "metrics": metrics, "per_user": per_user, "users": len(test),
            "user_ids": [held.data.user_ids[u] for u in test.users],
            "items_dropped": held.items_dropped, "interactions": held.interactions}


def compare_heldout(out: Path, protocol: str, a: str, b: str, dataset: str) -> dict:
    """Runs ``out/<protocol>/<a>`` and ``<b>`` on the held-out users: each one's metrics, and a vs b paired; beside
    it the same comparison on the runs' own test users (their saved lists)."""
    from bench.paired import run_gain
    from training.train import load_run_data

    seeds = {json.loads(RunLayout.at(out / protocol / name).config.read_text())["train"]["seed"] for name in (a, b)}
    if len(seeds) > 1:
        raise ValueError(f"{a} and {b} were trained with different seeds {sorted(seeds)}: not one replicate")
    full = load_run_data(dataset)
    scored = {name: score_heldout(out / protocol / name, full) for name in (a, b)}
    if scored[a]["user_ids"] != scored[b]["user_ids"]:
        raise ValueError(f"{a} and {b} hold out different users (another cut or protocol): not a paired comparison")
    gain, low, high = paired_gain_interval(scored[a]["per_user"], scored[b]["per_user"])
    metric = "window Recall@50" if protocol == "window" else "leave-one-out NDCG@10"
    own = {name: json.loads(RunLayout.at(out / protocol / name).metrics.read_text())["hymirec"]
           for name in (a, b)}
    return {
        "dataset": dataset, "out": str(out), "protocol": protocol, "metric": metric, "a": a, "b": b,
        "seed": seeds.pop(),
        "heldout_users": scored[a]["users"], "interactions": scored[a]["interactions"],
        "interactions_dropped": scored[a]["items_dropped"],
        "runs": {name: {"heldout": s["metrics"], "own_test": own[name]["test"], "valid_best": own[name]["valid_best"],
                        "epochs": own[name]["epochs"]} for name, s in scored.items()},
        "gain": gain, "low": low, "high": high, "reading": format_gain(gain, low, high),
        "own_test_reading": run_gain(out / protocol / a, out / protocol / b),
    }


# what a pair of mechanisms-bench variants compares, in the words of the mechanisms report's checks
COMPARISONS = {("preset", "preset-recent-only"): "long coded history vs recent only (preset, K=1)",
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
    rows = []
    for r in results:
        ra, rb, k = r["runs"][r["a"]], r["runs"][r["b"]], key[r["protocol"]]
        rows.append([comparison_name(r["a"], r["b"], r.get("seed", 0)), r["metric"], f"{r['heldout_users']:,}",
                     f"{ra['heldout'][k]:.4f}", f"{rb['heldout'][k]:.4f}", r["reading"], f"{ra['own_test'][k]:.4f}",
                     f"{rb['own_test'][k]:.4f}", r["own_test_reading"],
                     f"{ra['valid_best']:.4f} / {rb['valid_best']:.4f}"])
    dropped = sum(r["interactions_dropped"] for r in results) / max(1, sum(r["interactions"] for r in results))
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
                  "runs on their cut's test users."),
        "columns": RECORD_COLUMNS, "rows": rows,
        "reading": "; ".join(f"{COMPARISONS.get((r['a'], r['b']), r['a'] + ' vs ' + r['b'])}"
                             + (f" (seed {r['seed']})" if r.get("seed") else "") + f", {r['metric']}: "
                             f"{r['reading']} on {r['heldout_users']:,} held-out users ({r['own_test_reading']} on "
                             "the cut's own test users)" for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("compare", "record"))
    parser.add_argument("--dataset", help="compare: the whole dataset the runs' cut was taken from")
    parser.add_argument("--out", type=Path, help="compare: the mechanisms bench --out holding both runs")
    parser.add_argument("--protocol", choices=("leave_one_out", "window"))
    parser.add_argument("--a", help="compare: the variant run compared")
    parser.add_argument("--b", help="compare: the variant run it is compared with")
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
    path = args.json[0] if args.json else args.out / f"heldout-{args.protocol}-{args.a}-vs-{args.b}.json"
    write_json_atomic(path, result)
    print(f"[heldout] {result['a']} vs {result['b']}, {result['metric']}, {result['heldout_users']:,} held-out users: "
          f"{result['reading']} (own test: {result['own_test_reading']}) → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
