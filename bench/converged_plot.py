"""The converged view as a picture: HyMiRec against the strongest other model of each converged record, as a relative
leave-one-out NDCG@10 gain with its 95 % paired-bootstrap interval, beside the issue's +10 % goal.

`hymirec bench page` draws it (bench/results/converged_vs_strongest.png) from the same records as the table.
"""
from __future__ import annotations

import re
from pathlib import Path

# bench/paired.format_gain's text: "+9.2 % (95 % CI +3.3 to +15.7 %)", or the point gain alone: "+1.0 %"
_GAIN = re.compile(r"^([+-]?\d+(?:\.\d+)?) %(?: \(95 % CI ([+-]?\d+(?:\.\d+)?) to ([+-]?\d+(?:\.\d+)?) %\))?$")
GOAL = 10.0  # issue 25: HyMiRec ≥ 1.10 × the strongest converged SASRec / peer


def parse_gain(text: str) -> tuple[float, float | None, float | None] | None:
    """"+9.2 % (95 % CI +3.3 to +15.7 %)" → (9.2, 3.3, 15.7); "+1.0 %" → (1.0, None, None); "–" → None."""
    match = _GAIN.match(text.strip())
    if not match:
        return None
    gain, low, high = match.groups()
    return float(gain), float(low) if low else None, float(high) if high else None


def converged_gains(records: list[dict]) -> list[dict]:
    """One entry per converged record whose HyMiRec has a rival: dataset, strongest, gain, low, high (in %)."""
    rows = []
    for record in records:
        summary = record.get("converged")
        if not summary:
            continue
        numbers = summary.get("vs_strongest_pct")  # written by the report beside its text since 2026-12-06
        if numbers is None:  # a record written before: its text is the only copy of the numbers
            parsed = parse_gain(summary["vs_strongest"])
            numbers = dict(zip(("gain", "low", "high"), parsed)) if parsed else None
        if numbers:
            rows.append({"dataset": summary["dataset"], "strongest": summary["strongest"], **numbers})
    return rows


def plot_converged(records: list[dict], path: Path) -> bool:
    """Draw the gains of :func:`converged_gains` to ``path`` (PNG); False (nothing written) when there are none."""
    rows = converged_gains(records)
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.75 * len(rows) + 1.5))
    for y, row in enumerate(reversed(rows)):
        if row["low"] is not None:
            ax.plot([row["low"], row["high"]], [y, y], color="tab:blue", lw=2)
        ax.plot([row["gain"]], [y], "o", color="tab:blue")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["dataset"].replace(", ", ",\n") + f"\nvs {r['strongest']}" for r in reversed(rows)], fontsize=7)
    ax.axvline(0, color="grey", lw=1)
    ax.axvline(GOAL, color="tab:green", ls="--", lw=1, label=f"goal: +{GOAL:.0f} %")
    ax.set_title("Converged view: HyMiRec against the strongest other model of each row", fontsize=9)
    ax.set_xlabel("relative leave-one-out test NDCG@10, % (95 % paired-bootstrap interval)", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})  # no version stamp: the same records give the same bytes
    plt.close(fig)
    tmp.replace(path)
    return True
