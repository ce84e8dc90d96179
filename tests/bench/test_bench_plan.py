"""Bench plans: one command, every dataset under its own budget/seeds/peers, one report; resume; report-only."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from peer_support import write_tiny_dataset
from test_bench_quality import Fakes

from hymirec.cli import main as cli_main
from bench.plan import DEFAULT_PLAN, PlanError, load_plan, plan_settings, run_plan

PLAN = """
out = "{out}"
[defaults]
peers = "rectools-sasrec,recbole-sasrec"
epochs = 3
time_budget = 120
seeds = [0, 1]
ablations = false
multi_seed_max_interactions = 100000000

[[dataset]]
path = "small"
seeded_ablations = ["hymirec-k3"]
ablations = true
only_ablations = ["hymirec-k3"]

[[dataset]]
path = "other"
time_budget = 60.0
seeds = [0]
peers = "recbole-sasrec"
"""


@pytest.fixture()
def plan_env(tmp_path):
    write_tiny_dataset(tmp_path / "data" / "small", n_users=60, n_items=150)
    write_tiny_dataset(tmp_path / "data" / "other", n_users=50, n_items=300, seed=3)
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(out=tmp_path / "out"))
    return path, tmp_path / "data", tmp_path / "out"


def _run(path, data_dir, fakes, **kw):
    return run_plan(load_plan(path), data_dir=data_dir, log=lambda *_: None, train_fn=fakes.train,
                    peer_fn=fakes.peer, env_fn=lambda lib: f"/venv/{lib}/bin/python", **kw)


def test_plan_runs_each_dataset_under_its_own_settings_into_one_report(plan_env):
    path, data_dir, out = plan_env
    fakes = Fakes()
    payload = _run(path, data_dir, fakes)

    runs = [(Path(c.run_dir).parts[-3], Path(c.run_dir).name, c.train.max_train_seconds) for c in fakes.train_calls]
    assert runs == [("small", "full-seed0", 120.0), ("small", "full-seed1", 120.0),
                    ("small", "hymirec-k3-seed0", 120.0), ("small", "hymirec-k3-seed1", 120.0),
                    ("other", "full-seed0", 60.0)]
    assert [(c[0], c[1], c[3]) for c in fakes.peer_calls] == [
        ("rectools-sasrec", 0, 120.0), ("recbole-sasrec", 0, 120.0), ("recbole-sasrec", 1, 120.0),
        ("recbole-sasrec", 0, 60.0)]
    assert {r["dataset"] for r in payload["rows"]} == {"small", "other"} and payload["pending"] == []
    md = (out / "results.md").read_text()
    assert "≤ 3 epochs and ≤ 120 s (small)" in md and "≤ 3 epochs and ≤ 60 s (other)" in md
    assert payload["failures"] == []
    assert "small: seeds [0, 1] (and the ablation(s) hymirec-k3); other: seeds [0]" in md
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["plan"] == str(path) and settings["per_dataset"]["other"]["time_budget"] == 60.0

    again = Fakes()  # resume: all on disk
    _run(path, data_dir, again)
    assert again.train_calls == [] and again.peer_calls == []

    # another budget for one dataset: only that dataset's runs are stale and run again
    path.write_text(PLAN.format(out=out).replace("time_budget = 60.0", "time_budget = 90"))
    changed = Fakes()
    _run(path, data_dir, changed)
    assert [(Path(c.run_dir).parts[-3], c.train.max_train_seconds) for c in changed.train_calls] == [("other", 90.0)]
    assert [(c[0], c[3]) for c in changed.peer_calls] == [("recbole-sasrec", 90.0)]
    assert "≤ 3 epochs and ≤ 90 s (other)" in (out / "results.md").read_text()

    # other config overrides for one dataset: only our runs there are stale (peers do not read our config)
    path.write_text(PLAN.format(out=out).replace("time_budget = 60.0", "time_budget = 90\noverrides = [\"train.patience=5\"]"))
    patient = Fakes()
    payload = _run(path, data_dir, patient)
    assert [(Path(c.run_dir).parts[-3], c.train.patience) for c in patient.train_calls] == [("other", 5)]
    assert patient.peer_calls == []
    assert "Extra config overrides (other): `train.patience=5`" in (out / "results.md").read_text()
    assert {r["overrides"] == ["train.patience=5"] for r in payload["runs"]
            if r["dataset"] == "other" and r["kind"] != "peer"} == {True}


def test_report_only_trains_nothing_and_lists_what_is_missing(plan_env):
    path, data_dir, out = plan_env
    fakes = Fakes()
    payload = _run(path, data_dir, fakes, report_only=True)
    assert fakes.train_calls == [] and fakes.peer_calls == [] and payload["rows"] == []
    assert "small / HyMiRec (full) seed 1" in payload["pending"]
    assert "other / SASRec (RecBole 1.2.1) seed 0" in payload["pending"]
    assert any("the strongest peer, seeds [1]" in p for p in payload["pending"])
    assert "Not run yet" in (out / "results.md").read_text()

    _run(path, data_dir, Fakes())  # the real run
    (out / "other" / "results" / "hymirec-seed0.json").unlink()
    payload = _run(path, data_dir, fakes, report_only=True)
    assert fakes.train_calls == [] and payload["pending"] == ["other / HyMiRec (full) seed 0"]
    assert {r["method"] for r in payload["rows"] if r["dataset"] == "small"} >= {"hymirec", "recbole-sasrec"}


@pytest.mark.parametrize("edit, message", [
    (("seeds = [0]", "seeds = [0]\nbudget = 3"), r"\[\[dataset\]\] #2: unknown option 'budget'"),
    (("epochs = 3", "epochs = \"3\""), r"\[defaults\]: epochs = '3' should be int"),
    (("peers = \"recbole-sasrec\"", "peers = \"recbole-nope\""), r"#2 \(other\): unknown peer 'recbole-nope'"),
    (("seeded_ablations = [\"hymirec-k3\"]", "seeded_ablations = [\"hymirec-k9\"]"), r"#1 \(small\).*unknown"),
    (("path = \"other\"", "path = \"missing\""), r"#2: dataset .*missing': not found"),
    (("path = \"other\"", "path = \"all\""), r"#2: 'all' is not allowed"),
    (("[[dataset]]\npath = \"other\"", "[[dataset]]\npath = \"small\""), "listed twice"),
    (("out = ", "output = "), "unknown top-level key"),
    (("[defaults]", "ledger = 3\n[defaults]"), r"ledger = 3 should be a string"),
])
def test_bad_plans_are_refused_before_anything_trains(plan_env, edit, message):
    path, data_dir, out = plan_env
    path.write_text(PLAN.format(out=out).replace(*edit))
    fakes = Fakes()
    with pytest.raises(ValueError, match=message):
        _run(path, data_dir, fakes)
    assert fakes.train_calls == [] and not out.exists()


def test_unreadable_or_empty_plans_name_the_file(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        load_plan(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[defaults\n")
    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(tmp_path / "bad.toml")
    (tmp_path / "empty.toml").write_text("[defaults]\nseeds = [0]\n")
    with pytest.raises(PlanError, match="no \\[\\[dataset\\]\\] entries"):
        load_plan(tmp_path / "empty.toml")


def test_the_plans_ledger_and_the_ledger_flag(plan_env, tmp_path):
    path, data_dir, out = plan_env
    path.write_text(f'ledger = "{tmp_path / "ledger"}"\n' + PLAN.format(out=out))
    _run(path, data_dir, Fakes(), ledger="none")  # --ledger none: OUT only
    assert not (tmp_path / "ledger").exists()
    _run(path, data_dir, Fakes(), report_only=True)
    assert not (tmp_path / "ledger").exists()  # report-only writes no record
    _run(path, data_dir, Fakes(), out=tmp_path / "out2")  # a fresh OUT: everything trains, and is copied
    assert {p.name for p in (tmp_path / "ledger" / "other").glob("*.json")} == {
        p.name for p in (tmp_path / "out2" / "other" / "results").glob("*.json")}
    again = Fakes()  # yet another checkout: the plan's ledger says it is all done
    payload = _run(path, data_dir, again, out=tmp_path / "out3", report_only=True)
    assert again.train_calls == [] and payload["pending"] == []
    md = (tmp_path / "out3" / "results.md").read_text()
    assert f"records; ledger `{tmp_path / 'ledger'}`" in md and "**Measured:** 20" in md


def test_the_shipped_plan_is_valid():
    plan = load_plan(DEFAULT_PLAN)
    assert plan.ledger == "bench/ledger"
    settings = plan_settings(plan, "/tmp/unused")
    by_path = {e.dataset: s for e, s in zip(plan.entries, settings)}
    assert set(by_path) >= {"ml-100k", "amazon-games-2018", "s3rec-amazon-yelp-lastfm/Beauty",
                            "s3rec-amazon-yelp-lastfm/Sports_and_Outdoors", "s3rec-amazon-yelp-lastfm/Toys_and_Games"}
    assert all(len(s.peers) == 6 and s.epochs == 200 and s.ablations for s in settings)
    assert by_path["ml-100k"].seeds == [0, 1, 2] and by_path["ml-100k"].seeded_ablations == ["hymirec-k3"]


def test_cli_refuses_plan_with_per_dataset_flags(capsys):
    assert cli_main(["bench", "quality", "--plan", str(DEFAULT_PLAN), "--time-budget", "5"]) == 2
    assert "--plan sets --time-budget per dataset" in capsys.readouterr().err
    assert cli_main(["bench", "quality", "--dataset", "synthetic", "--report-only"]) == 2
    assert "--report-only needs --plan" in capsys.readouterr().err
