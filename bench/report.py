"""The quality bench's outputs from the per-run records: results.json, results.md, recall_at_k.png."""
from __future__ import annotations

import json
from pathlib import Path

from core.artifacts import write_json_atomic
from bench.datasets import PUBLISHED_SOURCE, BenchDataset, published_rows
from bench.results import KS, aggregate

TEXTLESS_MARK = "†"
TEXTLESS_NOTE = (f"{TEXTLESS_MARK} no item text: item-id embedding in place of the content encoder (HyMiRec's "
                 "stage 1 is a learned item-id table, trained as SASRec next-item prediction, dim 64; HyMiRec's "
                 "train time includes that training).")


def _cell(row: dict, field: str, digits: int = 4) -> str:
    if field not in row["mean"]:
        return "–"
    mean, std = row["mean"][field], row["std"][field]
    text = f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if row["n_seeds"] > 1 else text


def _published_cells(row: dict) -> list[str]:
    cells = []
    for field in [f"Recall@{k}" for k in KS] + [f"NDCG@{k}" for k in KS]:
        cells.append(f"{row[field]:.4f}" if field in row else "–")
    return cells


def dataset_cell(ds: BenchDataset | None, key: str) -> str:
    return f"{key} {TEXTLESS_MARK}" if ds is not None and not ds.has_text else key


def markdown_table(rows: list[dict], published: list[dict], datasets: dict[str, BenchDataset]) -> str:
    head = (["dataset", "method"] + [f"R@{k}" for k in KS] + [f"N@{k}" for k in KS]
            + ["train s", "infer ms/user", "ILD@50", "clusters@50", "seeds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = list(dict.fromkeys([r["dataset"] for r in rows] + [p["dataset"] for p in published]))
    for key in order:
        name = dataset_cell(datasets.get(key), key)
        for row in (r for r in rows if r["dataset"] == key):
            label = row["label"] + (f" ⚠ {row['protocol_violations']} history items dropped"
                                    if row["protocol_violations"] else "")
            cells = ([name, label] + [_cell(row, f"Recall@{k}") for k in KS] + [_cell(row, f"NDCG@{k}") for k in KS]
                     + [_cell(row, "train_seconds", 0), _cell(row, "infer_ms_per_user", 2), _cell(row, "ILD@50", 3),
                        _cell(row, "clusters@50", 1), str(row["n_seeds"])])
            lines.append("| " + " | ".join(cells) + " |")
        for row in (p for p in published if p["dataset"] == key):
            lines.append("| " + " | ".join([name, f"*{row['label']}*"] + _published_cells(row)
                                            + ["–", "–", "–", "–", "published"]) + " |")
    return "\n".join(lines)


def _budget_text(budget: dict) -> str:
    seconds = budget.get("time_budget_s")
    return f"≤ {budget['epochs']} epochs and ≤ {f'{seconds:.0f} s' if seconds else 'no time limit'}"


def budget_rule(settings: dict, records: list[dict]) -> str:
    """The budget each dataset's runs were measured under (from the records: a resumed bench may hold runs of
    an earlier invocation with another budget), or this invocation's when there are no records yet."""
    by_budget: dict[str, list[str]] = {}
    for rec in records:
        if rec.get("budget"):
            names = by_budget.setdefault(_budget_text(rec["budget"]), [])
            if rec["dataset"] not in names:
                names.append(rec["dataset"])
    if len(by_budget) <= 1:
        default = _budget_text({"epochs": settings.get("epochs", "?"), "time_budget_s": settings.get("time_budget")})
        return next(iter(by_budget), default)
    return "; ".join(f"{text} ({', '.join(names)})" for text, names in by_budget.items())


def _seeds_rule(s: dict) -> str:
    return (f"ran seeds {s['seeds']} on datasets with ≤ {s['multi_seed_max_interactions']:,} interactions"
            + (f", and so did the ablation(s) {', '.join(s.get('seeded_ablations') or [])}"
               if s.get("seeded_ablations") else ""))


def seeds_line(settings: dict) -> str:
    """Who ran which seeds: one rule for a single invocation, one per dataset for a plan."""
    head = (f"**Seeds:** mean ± std (sample std) over the seeds in the last column: HyMiRec, SASRec (ours) and the "
            f"strongest peer (by first-seed NDCG@10) ")
    if "per_dataset" not in settings:
        return head + _seeds_rule(settings) + "; every other row is one run."
    rules = "; ".join(f"{name}: seeds {s['seeds_run']}" + (f" (and the ablation(s) {', '.join(s['seeded_ablations'])})"
                                                         if s.get("seeded_ablations") and len(s["seeds_run"]) > 1 else "")
                      for name, s in settings["per_dataset"].items())
    return head + f"per dataset of the plan `{settings['plan']}`: {rules}. Every other row is one run."


def legend(settings: dict, datasets: dict[str, BenchDataset], failures: list[dict],
           records: list[dict] | None = None) -> list[str]:
    lines = [
        f"**Budget rule (every trained method, ours and peers):** embedding size {settings['dim']}, max sequence "
        f"length {settings['max_len']}, {budget_rule(settings, records or [])} of training per model, checked at "
        "epoch ends (early stopping on validation NDCG@10 allowed). HyMiRec's train time = stage 1 + codebook + "
        "stage 2, plus the SASRec training its id tables start from (`hybrid.id_init=sasrec`, the bench preset).",
        "**Scoring:** every method returns test top-100 lists (history masked); all are scored by "
        "training/evaluate.py (`evaluate_rankings`): full ranking over all items, leave-one-out, R@K = HR@K. "
        "Inference time per user = the method's own test-time wall time / test users.",
        "**Diversity:** ILD@50 = mean pairwise (1 − cosine) of the top-50 items' stage-1 item embeddings "
        "(item_embeddings.npy of the dataset's HyMiRec full run, seed "
        f"{settings['seeds'][0]}; the same table for every method); clusters@50 = number of distinct first-layer "
        "codes of the cosine residual codebook (item_codes.npy[:, 0], same run) among the top 50; both averaged "
        "over test users.",
        seeds_line(settings),
    ]
    dates = sorted(r["measured_at"][:10] for r in records or [] if r.get("measured_at"))
    if dates:
        undated = len(records) - len(dates)
        where = f"; ledger `{settings['ledger']}`" if settings.get("ledger") else ""
        lines.append(f"**Measured:** {dates[0]} to {dates[-1]} (UTC; {len(records)} records"
                     f"{f', {undated} of them undated' if undated else ''}{where}).")
    if any(not ds.has_text for ds in datasets.values()):
        lines.append(TEXTLESS_NOTE)
    if any(published_rows(ds) for ds in datasets.values()):
        lines.append(f"*Italic rows: published numbers ({PUBLISHED_SOURCE}), not measured here.*")
    for name, s in (settings.get("per_dataset") or {"": settings}).items():
        if s.get("overrides"):
            lines.append(f"Extra config overrides{f' ({name})' if name else ''}: `{' '.join(s['overrides'])}`.")
    for f in failures:
        lines.append(f"**Failed:** {f['dataset']} / {f['label']} (seed {f['seed']}): "
                     f"{f['error'].strip().splitlines()[0] if f['error'].strip() else 'unknown error'}")
    return lines


def plot_recall(rows: list[dict], published: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(8 * len(datasets), 4.5), squeeze=False)
    colours = plt.get_cmap("tab20")  # 20 distinct colours: a dataset has up to 14 rows
    styles = {"ablation": ":", "peer": "--"}  # ours and baselines solid
    for ax, name in zip(axes[0], datasets):
        for i, row in enumerate(r for r in rows if r["dataset"] == name):
            if not all(f"Recall@{k}" in row["mean"] for k in KS):
                continue
            means = [row["mean"][f"Recall@{k}"] for k in KS]
            errors = [row["std"][f"Recall@{k}"] for k in KS] if row["n_seeds"] > 1 else None
            label = row["label"] + (f" (n={row['n_seeds']})" if row["n_seeds"] > 1 else "")
            ax.errorbar(KS, means, yerr=errors, marker="o", ms=3, capsize=3, color=colours(i % 20),
                        ls=styles.get(row["kind"], "-"), label=label)
        for marker, row in zip("*PX^v", (p for p in published if p["dataset"] == name)):
            ax.plot([10], [row["Recall@10"]], marker=marker, ms=8, ls="none", color="k", label=row["label"])
        ax.set_title(name)
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.set_xticks(KS)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not on them
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_report(out: Path, records: list[dict], failures: list[dict], datasets: list[BenchDataset],
                 settings: dict, method_order: list[str], pending: list[str] | None = None) -> dict:
    """Aggregate and write results.json, results.md and recall_at_k.png under ``out``; ``pending`` (a
    report-only run) = the runs still missing, listed in the legend so a partial table says so."""
    by_key = {d.key: d for d in datasets}
    rows = aggregate(records, method_order)
    published = [row for ds in datasets if any(r["dataset"] == ds.key for r in rows) for row in published_rows(ds)]
    payload = {"settings": settings, "rows": rows, "published": published, "failures": failures,
               "datasets": {d.key: {"spec": d.spec, "users": d.users, "items": d.items,
                                    "interactions": d.interactions, "has_text": d.has_text,
                                    "item_representation": d.item_representation} for d in datasets},
               "runs": records, "pending": pending or []}
    write_json_atomic(out / "results.json", payload)
    text = ["# Quality benchmark", "", markdown_table(rows, published, by_key), ""]
    text += [f"- {line}" for line in legend(settings, by_key, failures, records)]
    if pending:
        text.append(f"- **Not run yet ({len(pending)}; the same command trains them):** {'; '.join(pending)}.")
    (out / "results.md").write_text("\n".join(text) + "\n")
    plot_recall(rows, published, out / "recall_at_k.png")
    return payload


def print_summary(payload: dict, out: Path) -> None:
    print((out / "results.md").read_text())
    print(json.dumps({"results": str(out / "results.json"), "table": str(out / "results.md"),
                      "plot": str(out / "recall_at_k.png"), "failures": len(payload["failures"])}))
