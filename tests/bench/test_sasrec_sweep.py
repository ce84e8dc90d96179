"""bench/sasrec_sweep.py: every grid point trained and scored, the choice made on validation, resumable."""
from __future__ import annotations

import json

import pytest

import bench.sasrec_sweep as sweep_mod
from training.sasrec import SASRecConfig


@pytest.fixture()
def small_grid(monkeypatch):
    monkeypatch.setattr(sweep_mod, "GRID", {"dropout": (0.2, 0.5), "lr": (1e-3,), "batch_size": (128,)})
    monkeypatch.setattr(sweep_mod, "EPOCH_CAP", 2)


def test_sweep_chooses_on_validation_and_resumes(small_grid, tmp_path, monkeypatch):
    summary = sweep_mod.sweep("synthetic", tmp_path, "synthetic")
    assert len(summary["points"]) == 2 and all(p["epochs"] <= 2 for p in summary["points"])
    best = max(summary["points"], key=lambda p: p["valid_ndcg10"])
    assert summary["chosen"] == best["point"]  # by validation, whatever the test numbers say
    assert all(0 <= p["test"]["NDCG@10"] <= 1 for p in summary["points"])
    for p in summary["points"]:  # every epoch's validation score is kept, its best is the point's
        assert len(p["valid_curve"]) == p["epochs"] and max(p["valid_curve"]) == pytest.approx(p["valid_ndcg10"],
                                                                                               abs=1e-5)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(sweep_mod, "run_point", no_training)
    assert sweep_mod.sweep("synthetic", tmp_path, "synthetic")["chosen"] == summary["chosen"]
    with pytest.raises(SystemExit, match="trained with patience 10, not 50: a sweep under another patience"):
        sweep_mod.sweep("synthetic", tmp_path, "synthetic", patience=50)  # finished points are not reused
    with pytest.raises(SystemExit, match="'dropout0.9-lr0.001-batch128' is not a grid point"):
        sweep_mod.sweep("synthetic", tmp_path, "synthetic", first="dropout0.9-lr0.001-batch128")

    record = sweep_mod.report([tmp_path], "cmd", "machine")
    assert len(record["rows"]) == 2 and sum(r[1].startswith("**") for r in record["rows"]) == 1  # chosen in bold
    assert record["columns"] == ["dropout / lr / batch", "synthetic"]
    assert record["reading"].startswith(f"synthetic: chosen {sweep_mod.point_name(summary['chosen'])}")
    json.dumps(record)  # a bench/records file
    # a sweep recorded apart (Games, in bench-mechanisms) is its own area on the page, not a second one of this name
    assert sweep_mod.report([tmp_path], "cmd", "machine", part="Games")["area"] == record["area"] + " (Games)"

    # a later run on the same data takes the chosen settings as run-config overrides (bench.mechanisms --sasrec-from)
    from training.config import RunConfig

    cfg = RunConfig(dataset="synthetic").override(sweep_mod.chosen_overrides(tmp_path, "synthetic"))
    assert (cfg.train.sasrec_dropout, cfg.train.sasrec_lr) == (summary["chosen"]["dropout"], summary["chosen"]["lr"])
    assert (cfg.train.sasrec_patience, cfg.train.sasrec_epochs) == (10, 2)  # the model the sweep scored: its patience
    with pytest.raises(SystemExit, match="ran on 'synthetic', not on 'ml-1m'"):
        sweep_mod.chosen_overrides(tmp_path, "../shared/data/ml-1m")
    with pytest.raises(SystemExit, match="sweep.json is missing"):
        sweep_mod.chosen_overrides(tmp_path / "nothing", "synthetic")


def test_first_point_trains_first_and_the_summary_keeps_grid_order(small_grid, tmp_path, monkeypatch):
    trained = []

    def fake_point(data, split, point, seed=0, patience=10, *checkpointing):
        trained.append(sweep_mod.point_name(point))
        return {"point": point, "valid_ndcg10": point["dropout"], "test": {"NDCG@10": 0.1}, "epochs": 1}

    monkeypatch.setattr(sweep_mod, "run_point", fake_point)
    summary = sweep_mod.sweep("synthetic", tmp_path, "synthetic", first="dropout0.5-lr0.001-batch128")
    assert trained == ["dropout0.5-lr0.001-batch128", "dropout0.2-lr0.001-batch128"]
    assert [p["point"]["dropout"] for p in summary["points"]] == [0.2, 0.5]


def test_bad_sasrec_settings_are_named():
    with pytest.raises(ValueError, match="train.sasrec_dropout"):
        SASRecConfig(dropout=1.0)
    with pytest.raises(ValueError, match="train.sasrec_batch_size"):
        SASRecConfig(batch_size=0)


def test_a_point_that_ran_into_a_lower_cap_trains_again(small_grid, tmp_path, monkeypatch):
    trained = []

    def fake_point(data, split, point, seed=0, patience=10, *checkpointing):
        trained.append(sweep_mod.point_name(point))
        return {"point": point, "valid_ndcg10": point["dropout"], "test": {"NDCG@10": 0.1}, "epochs": 1,
                "best_epoch": 1, "early_stopped": True, "patience": patience}

    monkeypatch.setattr(sweep_mod, "run_point", fake_point)
    # dropout 0.2 ran into a cap of 1 (lower than today's 2); dropout 0.5 stopped early: only the first trains again
    capped = {"point": {"dropout": 0.2, "lr": 1e-3, "batch_size": 128}, "valid_ndcg10": 0.9, "test": {"NDCG@10": 0.1},
              "epochs": 1, "best_epoch": 1, "early_stopped": False, "patience": 10}
    stopped = dict(capped, point={"dropout": 0.5, "lr": 1e-3, "batch_size": 128}, early_stopped=True)
    for r in (capped, stopped):
        (tmp_path / f"{sweep_mod.point_name(r['point'])}.json").write_text(json.dumps(r))
    summary = sweep_mod.sweep("synthetic", tmp_path, "synthetic")
    assert trained == ["dropout0.2-lr0.001-batch128"]
    assert summary["chosen"]["dropout"] == 0.5  # the retrained point's own validation score counts now
    assert "cap 2 epochs, never bound" in sweep_mod.report([tmp_path], "cmd", "machine")["setup"]
    capped_again = dict(stopped, early_stopped=False, epochs=2)  # at today's cap: reported as bound, not retrained
    (tmp_path / "dropout0.5-lr0.001-batch128.json").write_text(json.dumps(capped_again))
    sweep_mod.sweep("synthetic", tmp_path, "synthetic")
    assert trained == ["dropout0.2-lr0.001-batch128"]
    assert "cap 2 epochs, bound for synthetic dropout0.5-lr0.001-batch128" in sweep_mod.report(
        [tmp_path], "cmd", "machine")["setup"]


def test_a_paused_sweep_resumes_to_the_same_result(small_grid, tmp_path):
    straight = sweep_mod.sweep("synthetic", tmp_path / "straight", "synthetic")
    calls = 0
    while (summary := sweep_mod.sweep("synthetic", tmp_path / "paused", "synthetic", pause_after=0.0)) is None:
        calls += 1  # every call trains one epoch, checkpoints it and stops
        assert len(list((tmp_path / "paused").glob("*.ckpt"))) == 1 and calls < 10
    assert calls >= 2 and not list((tmp_path / "paused").glob("*.ckpt"))  # a finished point drops its checkpoint
    strip = lambda s: [{k: v for k, v in p.items() if k != "train_seconds"} for p in s["points"]]  # noqa: E731
    assert strip(summary) == strip(straight) and summary["chosen"] == straight["chosen"]
    assert sweep_mod.main(["run", "--dataset", "synthetic", "--out", str(tmp_path / "cli"), "--pause-after", "0"]) == 75


def test_sweeps_under_several_patiences_get_a_column_each(small_grid, tmp_path, monkeypatch):
    def fake_point(data, split, point, seed=0, patience=10, *checkpointing):
        return {"point": point, "valid_ndcg10": point["dropout"] * patience, "test": {"NDCG@10": 0.1 * patience},
                "epochs": 1, "best_epoch": 1, "early_stopped": True, "patience": patience}

    monkeypatch.setattr(sweep_mod, "run_point", fake_point)
    sweep_mod.sweep("synthetic", tmp_path / "p10", "synthetic")
    sweep_mod.sweep("synthetic", tmp_path / "p50", "synthetic", patience=50)
    record = sweep_mod.report([tmp_path / "p10", tmp_path / "p50"], "cmd", "machine")
    assert record["columns"] == ["dropout / lr / batch", "synthetic, patience 10", "synthetic, patience 50"]
    assert "patience 10/50 on validation" in record["setup"]
    assert record["reading"].count("synthetic, patience") == 2


def test_layout_settings_name_every_point_and_carry_to_the_run(small_grid, tmp_path, monkeypatch):
    layout = sweep_mod.parse_layout(["input_norm=TRUE", "attn_dropout=0.5", "post_ln=false"])
    assert layout == {"attn_dropout": 0.5, "input_norm": True}  # typed, in one order, our own values left out
    assert sweep_mod.parse_layout(["attn_dropout=0", "input_norm=false"]) == {}  # our layout: no second name for it
    for bad, message in [("depth=3", "KEY one of attn_dropout"), ("post_ln=yes", "post_ln is true or false"),
                         ("attn_dropout", "expected KEY=VALUE"), ("attn_dropout=half", "takes a number")]:
        with pytest.raises(SystemExit, match=message):
            sweep_mod.parse_layout([bad])

    def fake_point(data, split, point, seed=0, patience=10, *checkpointing):
        valid = point["dropout"] + 0.01 * point.get("input_norm", False)
        return {"point": point, "valid_ndcg10": valid, "test": {"NDCG@10": 0.1}, "epochs": 1,
                "best_epoch": 1, "early_stopped": True, "patience": patience}

    monkeypatch.setattr(sweep_mod, "run_point", fake_point)
    plain = sweep_mod.sweep("synthetic", tmp_path / "plain", "synthetic")
    assert plain["chosen"] == {"dropout": 0.5, "lr": 1e-3, "batch_size": 128}
    summary = sweep_mod.sweep("synthetic", tmp_path / "plain", "synthetic", layout=layout,
                              first="dropout0.5-lr0.001-batch128-attn_dropout0.5-input_norm")
    assert len(summary["points"]) == 4  # both layouts in one OUT: chosen among all four on validation
    assert summary["chosen"] == {"dropout": 0.5, "lr": 1e-3, "batch_size": 128, **layout}
    assert (tmp_path / "plain" / "dropout0.2-lr0.001-batch128-attn_dropout0.5-input_norm.json").is_file()

    narrow = sweep_mod.parse_grid(["dropout=0.5"])
    assert narrow == {**sweep_mod.GRID, "dropout": (0.5,)}
    for bad, message in [("dropout=high", "dropout takes numbers like 0.2"), ("depth=2", "KEY one of dropout")]:
        with pytest.raises(SystemExit, match=message):
            sweep_mod.parse_grid([bad])
    layout_only = sweep_mod.sweep("synthetic", tmp_path / "layout", "layout", layout=layout, grid_axes=narrow)
    assert [p["point"]["dropout"] for p in layout_only["points"]] == [0.5]
    record = sweep_mod.report([tmp_path / "plain", tmp_path / "layout"], "cmd", "machine")
    assert record["rows"][0] == ["dropout0.2-lr0.001-batch128 (default)", "0.2000 / 0.1000, 1 (1)", "—"]
    assert record["rows"][2][2] == "—"  # the layout's dropout 0.2 point: not in the narrowed grid
    assert record["rows"][-1][1:] == ["**0.5100 / 0.1000, 1 (1)**"] * 2  # each column its own sweep's points
    assert "RecBole's attention dropout" in record["setup"]
    # no default point in a --set-only sweep: no comparison with it
    assert record["reading"].endswith("layout: chosen dropout0.5-lr0.001-batch128-attn_dropout0.5-input_norm, "
                                      "test NDCG@10 0.1000")

    from training.config import RunConfig

    cfg = RunConfig(dataset="synthetic").override(sweep_mod.chosen_overrides(tmp_path / "plain", "synthetic"))
    train = cfg.train
    assert (train.sasrec_attn_dropout, train.sasrec_post_ln, train.sasrec_input_norm) == (0.5, False, True)
    # one layout's best point only (HyMiRec's warm-start candidates): our own layout, named by its default values
    ours = sweep_mod.parse_layout(["input_norm=false"], "--sasrec-layout")
    cfg = RunConfig(dataset="synthetic").override(sweep_mod.chosen_overrides(tmp_path / "plain", "synthetic", ours))
    assert (cfg.train.sasrec_dropout, cfg.train.sasrec_input_norm, cfg.train.sasrec_attn_dropout) == (0.5, False, 0.0)
    with pytest.raises(SystemExit, match="trained no point with the layout {'post_ln': True}"):
        sweep_mod.chosen_overrides(tmp_path / "plain", "synthetic", {"post_ln": True})
    with pytest.raises(SystemExit, match="--sasrec-layout 'input_norm=maybe': input_norm is true or false"):
        sweep_mod.parse_layout(["input_norm=maybe"], "--sasrec-layout")


def test_a_run_loads_the_model_the_sweep_chose_instead_of_training_it(small_grid, tmp_path):
    from training.config import RunConfig
    from training.train import start_run, train_baselines

    summary = sweep_mod.sweep("synthetic", tmp_path / "sweep", "synthetic")
    chosen = next(p for p in summary["points"] if p["point"] == summary["chosen"])
    overrides = sweep_mod.chosen_overrides(tmp_path / "sweep", "synthetic", weights=True)
    assert f"train.sasrec_weights={sweep_mod.weights_path(tmp_path / 'sweep', chosen['point']).resolve()}" in overrides
    assert not any("sasrec_weights" in o for o in sweep_mod.chosen_overrides(tmp_path / "sweep", "synthetic"))

    logs = []
    state = start_run(RunConfig(dataset="synthetic", run_dir=str(tmp_path / "run")).override(overrides),
                      progress=False, log=logs.append)
    train_baselines(state)
    loaded = state.metrics["sasrec"]
    assert loaded["loaded_from"].endswith(".pt") and not any("[sasrec] epoch" in line for line in logs)  # no training
    assert (loaded["valid_best_ndcg10"], loaded["epochs"]) == (chosen["valid_ndcg10"], chosen["epochs"])
    assert loaded["test"]["NDCG@10"] == pytest.approx(chosen["test"]["NDCG@10"], abs=1e-6)  # the very model

    other = RunConfig(dataset="synthetic", run_dir=str(tmp_path / "other")).override(overrides + ["train.sasrec_lr=0.01"])
    with pytest.raises(ValueError, match=r"was trained with other settings \(saved, this run's\): \{'lr': \(0.001, 0.01\)"):
        train_baselines(start_run(other, progress=False, log=logs.append))
    window = RunConfig(dataset="synthetic", run_dir=str(tmp_path / "w")).override(overrides + ["train.protocol=window"])
    with pytest.raises(ValueError, match="trained on the leave-one-out split, not window"):
        start_run(window, progress=False, log=logs.append)  # refused before any data is read or written
    assert not (tmp_path / "w").exists()
