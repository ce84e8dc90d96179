"""BENCHMARKS.md is generated from the committed records and kept current; its tables come from the records."""
from __future__ import annotations

import json

from bench.results_page import (MECHANISMS_PAGE, PAGE, area_section, converged_section, merge_parts, quality_section,
                                 render_mechanisms_page, render_page)


def _record(dataset, method, kind, seed, ndcg, label=None):
    return {"dataset": dataset, "method": method, "kind": kind, "seed": seed, "label": label or method,
            "library": "x", "metrics": {"NDCG@10": ndcg, "Recall@10": 2 * ndcg}, "measured_at": "2026-12-01T00:00:00"}


def test_committed_page_is_what_the_records_generate():
    assert PAGE.read_text() == render_page(), "BENCHMARKS.md is stale: run `make bench-page` and commit it"
    assert MECHANISMS_PAGE.read_text() == render_mechanisms_page(), f"{MECHANISMS_PAGE} is stale: run `make bench-page`"


def test_page_fits_two_screens_and_names_its_commands():
    text = render_page()
    # short enough to read whole: ~22 lines per area (quality, codebook, codebook migration, streaming, serving, GPU,
    # reliability) and ~6 per mechanisms area, whose tables are in bench/results/mechanisms.md, linked from each;
    # the converged view grows by a row per dataset and replicate seed (eight at most) and has its plot; Games' SASRec
    # sweep (bench-mechanisms) is an area of its own, ~14 lines; four more mechanisms areas (the steered interests,
    # the long history under leave-one-out and its second seed, the held-out users); the SASRec sweep's rows grow by one
    # per layout tried (ML-100K's stride-1 point, 2026-12-06: 271 lines); Games' and LastFM's SASRec sweeps are columns
    # of the main sweep's table (merge_parts), and LastFM's converged row (2026-12-07: 255 lines)
    assert len(text.splitlines()) <= 272
    sections = text.split("\n## ")[1:]
    assert len(sections) >= 9
    for section in sections:  # every area names the command that measured it: a code block, or inline
        assert "```" in section or "`" in section.split("\n")[2], section.split("\n")[0]
    mechanisms = [s for s in sections if s.startswith("Mechanisms")]
    assert mechanisms and all("bench/results/mechanisms.md#" in s for s in mechanisms)
    assert all(s.split("\n")[0] in render_mechanisms_page() for s in mechanisms)  # each one's table is there


def test_quality_section_picks_the_strongest_peer_and_compares_ablations_on_their_own_seeds():
    records = [_record("D", "hymirec", "ours", 0, 0.10), _record("D", "hymirec", "ours", 1, 0.12),
               _record("D", "sasrec-ours", "baseline", 0, 0.09),
               _record("D", "peer-a", "peer", 0, 0.04, "A"), _record("D", "peer-b", "peer", 0, 0.05, "B"),
               _record("D", "hymirec-k3", "ablation", 0, 0.11, "HyMiRec: K=3")]
    text = quality_section(records)
    row = next(line for line in text.splitlines() if line.startswith("| D |"))
    # mean 0.11, sample std of (0.10, 0.12) = 0.0141; strongest peer B (0.05); 0.11 / 0.05 = 2.20
    assert row == "| D | 0.1100 ± 0.0141 | 0.0900 | B: 0.0500 | 2.20× | 0, 1 |"  # header: ids from our SASRec
    # the ablation ran seed 0 only: compared with the full run's seed 0 (0.10), not the mean: +10.0 %
    assert "| K=3 | +10.0 % |" in text


def test_area_section_renders_its_record(tmp_path):
    record = {"area": "Codebook", "measured_at": "2026-01-01", "machine": "m", "command": "run it",
              "columns": ["a", "b"], "rows": [[1, "x"]], "reading": "fine"}
    text = area_section(json.loads(json.dumps(record)))
    assert text.splitlines()[0] == "## Codebook"
    assert "```\nrun it\n```" in text and "| a | b |" in text and "| 1 | x |" in text and text.endswith("fine")


def test_converged_view_has_a_row_per_dataset_and_a_column_per_model():
    def summary(dataset, models, strongest, versus):
        return {"converged": {"dataset": dataset, "strongest": strongest, "vs_strongest": versus,
                              "models": {label: {"NDCG@10": v, "epochs": e} for label, (v, e) in models.items()}}}

    records = [summary("A", {"HyMiRec": (0.12, 30), "SASRec (ours)": (0.10, 50)}, "SASRec (ours)", "+20.0 %"),
               summary("B", {"SASRec (ours)": (0.03, 40), "SASRec (RecBole)": (0.04, 60)}, "SASRec (RecBole)", "–"),
               {"area": "Codebook"}]  # not a converged record: no row
    lines = converged_section(records).splitlines()
    assert lines[0] == "## Quality: converged view, each model to its own early stop"
    header = next(line for line in lines if line.startswith("| dataset |"))
    # our columns first (those some row has: no "ids from scratch" run here), then every peer library's, then the
    # comparison
    assert header == "| dataset | HyMiRec | SASRec (ours) | SASRec (RecBole) | HyMiRec vs the strongest other |"
    assert "| A | 0.1200 (30) | 0.1000 (50) | – | +20.0 % (SASRec (ours)) |" in lines
    assert "| B | – | 0.0300 (40) | 0.0400 (60) | – |" in lines
    records[1]["converged"]["models"]["SASRec (RecBole)"]["published"] = 0.05  # a check against the paper's number
    records[1]["converged"]["models"]["SASRec (RecBole)"]["patience"] = 50  # longer than the view's rule of 10
    assert ("| B | – | 0.0300 (40) | 0.0400 (60; patience 50; 80% of the published 0.0500) | – |"
            in converged_section(records))
    assert "epoch caps never bound" in converged_section(records)
    records[1]["converged"]["models"]["SASRec (RecBole)"]["capped"] = True  # ran into its cap: said in cell and head
    assert "0.0400 (60, epoch cap; patience 50;" in converged_section(records)
    assert "an epoch cap bound only where a cell says so" in converged_section(records)
    assert converged_section([{"area": "Codebook"}]) == ""


def test_a_part_record_becomes_columns_of_its_area_and_keeps_its_setup_date_and_command():
    def area(name, columns, rows, date, command, reading):
        return {"area": name, "measured_at": date, "machine": "m", "command": command, "setup": f"setup of {name}.",
                "columns": columns, "rows": rows, "reading": reading}
    main = area("Sweep", ["point", "A"], [["p1", "1"], ["p2", "2"]], "2026-12-05", "make a", "A: chosen p1")
    part = area("Sweep (B)", ["point", "B"], [["p2", "20"], ["p3", "30"]], "2026-12-07", "make b", "B: chosen p3")
    other = area("Other (C)", ["x"], [["1"]], "2026-12-01", "make c", "")  # no "Other" area: stays its own
    mechanisms = [area(f"Mechanisms: X{d}", ["x"], [["1"]], "2026-12-01", "make d", "") for d in ("", " (ml-1m)")]
    merged = merge_parts([main, other, part] + mechanisms)
    assert [r["area"] for r in merged] == ["Sweep", "Other (C)", "Mechanisms: X", "Mechanisms: X (ml-1m)"]
    sweep = merged[0]
    assert sweep["columns"] == ["point", "A", "B"]
    assert sweep["rows"] == [["p1", "1", "—"], ["p2", "2", "20"], ["p3", "—", "30"]]
    assert "2026-12-07" in sweep["setup"] and "`make b`" in sweep["setup"] and "setup of Sweep (B)." in sweep["setup"]
    assert sweep["reading"] == "A: chosen p1; B: chosen p3"
    assert main["columns"] == ["point", "A"]  # the records themselves are left as they are
