"""Per-run result files, mean ± std aggregation and the Markdown table (published rows, flags)."""
from __future__ import annotations

import json

import pytest

from bench.datasets import BenchDataset
from bench.report import write_report
from bench.results import ResultStore, aggregate, mean_std

SETTINGS = {"dim": 64, "max_len": 50, "epochs": 20, "time_budget": 900.0, "seeds": [0, 1, 2],
            "multi_seed_max_interactions": 200000, "overrides": []}


def _record(dataset, method, seed, r10, label=None, **extra):
    metrics = {f"{m}@{k}": r10 * k / 10 for m in ("Recall", "NDCG") for k in (10, 20, 50)}
    return {"dataset": dataset, "method": method, "label": label or method, "kind": "ours", "seed": seed,
            "metrics": {"users": 10, **metrics}, "train_seconds": 100.0 * (seed + 1), "infer_ms_per_user": 1.0,
            "epochs_run": 3, "diversity": {"ILD@50": 0.5, "clusters@50": None}, "protocol_violations": 0, **extra}


def test_mean_std_is_the_sample_std():
    assert mean_std([0.1, 0.2, 0.3]) == (pytest.approx(0.2), pytest.approx(0.1))
    assert mean_std([0.7]) == (0.7, 0.0)


def test_aggregate_groups_by_dataset_and_method():
    records = [_record("b", "hymirec", s, r) for s, r in ((0, 0.1), (1, 0.2), (2, 0.3))]
    records += [_record("a", "popularity", 0, 0.05), _record("b", "popularity", 0, 0.04)]
    rows = aggregate(records, ["popularity", "hymirec"])
    assert [(r["dataset"], r["method"], r["n_seeds"]) for r in rows] == [
        ("b", "popularity", 1), ("b", "hymirec", 3), ("a", "popularity", 1)]
    hy = rows[1]
    assert hy["mean"]["Recall@10"] == pytest.approx(0.2) and hy["std"]["Recall@10"] == pytest.approx(0.1)
    assert hy["mean"]["train_seconds"] == pytest.approx(200.0) and hy["std"]["train_seconds"] == pytest.approx(100.0)
    assert hy["seeds"] == [0, 1, 2] and "clusters@50" not in hy["mean"]  # None = not measured, not 0
    assert rows[0]["std"]["Recall@10"] == 0.0


def test_store_resume_and_failures(tmp_path):
    store = ResultStore(tmp_path)
    assert not store.has("d", "m", 0)
    store.write_failure("d", "m", 0, "M", "boom")
    assert store.failures() == [{"dataset": "d", "method": "m", "seed": 0, "label": "M", "error": "boom"}]
    assert store.records() == []  # a failure is not a result: the next run retries it
    store.write(_record("d", "m", 0, 0.1))
    assert store.has("d", "m", 0) and not store.has("d", "m", 1) and store.failures() == []
    assert [r["seed"] for r in store.records(["d"])] == [0] and store.records(["other"]) == []


def _ds(key, users, items, has_text):
    return BenchDataset(key=key, spec=key, users=users, items=items, interactions=1000, has_text=has_text)


def test_report_table_published_rows_and_flags(tmp_path):
    datasets = [_ds("ml-100k", 943, 1682, True), _ds("Beauty", 22363, 12101, False)]
    records = [_record("ml-100k", "hymirec", s, r, "HyMiRec") for s, r in ((0, 0.1), (1, 0.2), (2, 0.3))]
    records += [_record("Beauty", "hymirec", 0, 0.05, "HyMiRec")]
    payload = write_report(tmp_path, records, [], datasets, SETTINGS, ["hymirec"])
    md = (tmp_path / "results.md").read_text()
    lines = md.splitlines()
    hy_ml = next(line for line in lines if line.startswith("| ml-100k | HyMiRec |"))
    assert "| 0.2000 ± 0.1000 |" in hy_ml and hy_ml.endswith("| 3 |") and "| 200 ± 100 |" in hy_ml
    assert next(line for line in lines if line.startswith("| Beauty † | HyMiRec |")).endswith("| 1 |")
    published = [line for line in lines if "(published)" in line]
    assert len(published) == 3 and all(line.startswith("| Beauty † | *") for line in published)
    sasrec = next(line for line in published if "*SASRec (published)*" in line)
    assert "| 0.0605 | – | – | 0.0318 | – | – |" in sasrec and sasrec.endswith("| published |")
    assert "ml-100k †" not in md and "item-id embedding in place of the content encoder" in md
    assert "≤ 20 epochs and ≤ 900 s of training per model" in md and "embedding size 64" in md
    assert "item_embeddings.npy" in md and "item_codes.npy[:, 0]" in md
    assert [p["dataset"] for p in payload["published"]] == ["Beauty"] * 3
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["datasets"]["Beauty"]["item_representation"] == "item_id_embedding" and len(saved["runs"]) == 4
    assert (tmp_path / "recall_at_k.png").stat().st_size > 0


def test_budget_rule_names_each_datasets_own_budget():
    from bench.report import budget_rule

    settings = {"epochs": 200, "time_budget": 400.0}
    assert budget_rule(settings, []) == "≤ 200 epochs and ≤ 400 s"  # nothing measured yet: this invocation's
    small = {"epochs": 200, "time_budget_s": 400.0}
    big = {"epochs": 200, "time_budget_s": 1200.0}
    records = [{"dataset": "ml-100k", "budget": small}, {"dataset": "ml-100k", "budget": small},
               {"dataset": "Beauty", "budget": big}, {"dataset": "games", "budget": big}]
    assert budget_rule(settings, records) == ("≤ 200 epochs and ≤ 400 s (ml-100k); "
                                              "≤ 200 epochs and ≤ 1200 s (Beauty, games)")
    assert budget_rule({"epochs": 5, "time_budget": None}, records[:1]) == "≤ 200 epochs and ≤ 400 s"


def test_ledger_keeps_a_copy_and_counts_as_done(tmp_path):
    ledger = tmp_path / "ledger"
    first = ResultStore(tmp_path / "out1", ledger)
    first.write(_record("d", "m", 0, 0.1))
    assert (ledger / "d" / "m-seed0.json").is_file()
    fresh = ResultStore(tmp_path / "out2", ledger)  # another checkout: its OUT is empty, the ledger is not
    assert fresh.has("d", "m", 0) and fresh.get("d", "m", 0)["metrics"]["Recall@10"] == pytest.approx(0.1)
    assert [r["method"] for r in fresh.records(["d"])] == ["m"] and fresh.records(["other"]) == []
    # OUT's record (this checkout's, newer) wins over the ledger's for the same (dataset, method, seed)
    (tmp_path / "out2" / "d" / "results").mkdir(parents=True)
    (tmp_path / "out2" / "d" / "results" / "m-seed0.json").write_text(json.dumps(_record("d", "m", 0, 0.3)))
    assert [r["metrics"]["Recall@10"] for r in fresh.records()] == [pytest.approx(0.3)]
    assert ResultStore(tmp_path / "out3").records() == []  # no ledger: OUT only


def test_a_broken_record_names_its_file(tmp_path):
    store = ResultStore(tmp_path / "out", tmp_path / "ledger")
    (tmp_path / "ledger" / "d").mkdir(parents=True)
    (tmp_path / "ledger" / "d" / "m-seed0.json").write_text("{half")
    with pytest.raises(ValueError, match=r"m-seed0.json: not a valid result record"):
        store.get("d", "m", 0)


def test_measured_line_counts_every_record_and_the_undated_ones(tmp_path):
    records = [_record("d", "m", 0, 0.1, measured_at="2026-11-30T10:00:00+00:00"),
               _record("d", "m", 1, 0.1, measured_at="2026-12-01T10:00:00+00:00"), _record("d", "m", 2, 0.1)]
    write_report(tmp_path, records, [], [_ds("d", 10, 20, False)], SETTINGS, ["m"])
    md = (tmp_path / "results.md").read_text()
    assert "**Measured:** 2026-11-30 to 2026-12-01 (UTC; 3 records, 1 of them undated)." in md
