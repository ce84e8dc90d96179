"""A peer that finishes after its dataset's converged record was written joins that record (bench/record_amend.py)
with the same row and view entries a full report would have given it."""
from __future__ import annotations

import json

import pytest

from bench.mechanisms_report import report
from bench.record_amend import CONVERGED_AMENDMENTS, add_peers, add_sweep_points, add_warm_start, adopt_sasrec


def _peer(out, name, label, ndcg, **extra):
    run = out / "leave_one_out" / "peers" / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"label": label, "epochs": 60, "best_epoch": 50, "patience": 50,
                                                  "test": {"NDCG@10": ndcg, "Recall@10": 0.2}, **extra}))


@pytest.fixture
def out(tmp_path):
    """A converged run: HyMiRec 0.12, our SASRec 0.10, RecTools' BERT4Rec 0.105, on the split of "toy"."""
    preset = tmp_path / "leave_one_out" / "preset"
    preset.mkdir(parents=True)
    (preset / "metrics.json").write_text(json.dumps({
        "hymirec": {"test": {"NDCG@10": 0.12, "Recall@10": 0.2}, "epochs": 30, "valid_best": 0.13},
        "popularity": {"test": {"NDCG@10": 0.02}}, "sasrec": {"test": {"NDCG@10": 0.10}, "epochs": 40}}))
    _peer(tmp_path, "rectools-bert4rec", "BERT4Rec (RecTools)", 0.105)
    split = tmp_path / "leave_one_out" / "peers" / "split"
    split.mkdir()
    (split / "manifest.json").write_text(json.dumps({"dataset": "toy", "n_users": 10, "n_items": 20}))
    return tmp_path


def test_an_added_peer_gets_the_row_and_view_a_full_report_gives_it(out):
    record = report(out, "toy", "cmd", "machine", suite="converged")
    _peer(out, "recbole-sasrec", "SASRec (RecBole 1.2.1)", 0.115)  # finishes later, stronger than BERT4Rec
    full = report(out, "toy", "cmd", "machine", suite="converged")
    assert add_peers(record, out, today="2026-12-06") == ["SASRec (RecBole 1.2.1)"]
    assert record["converged"]["models"] == full["converged"]["models"]
    assert sorted(record["rows"]) == sorted(full["rows"])
    view = record["converged"]
    assert (view["strongest"], view["vs_strongest"]) == ("SASRec (RecBole 1.2.1)", "+4.3 %")
    assert view["vs_strongest_pct"] == {"gain": 4.35, "low": None, "high": None}
    assert record["checks"] == full["checks"]  # "vs the strongest SASRec" now names RecBole's
    assert "Added on 2026-12-06" in record["setup"] and "SASRec (RecBole 1.2.1)" in record["setup"]


def test_a_weaker_added_peer_leaves_the_strongest_and_its_interval(out):
    record = report(out, "toy", "cmd", "machine", suite="converged")
    record["converged"]["vs_strongest"] = "+14.3 % (95 % CI +1.0 to +20.0 %)"  # as if HyMiRec's lists were kept
    _peer(out, "recbole-sasrec", "SASRec (RecBole 1.2.1)", 0.09)
    add_peers(record, out)
    assert record["converged"]["strongest"] == "BERT4Rec (RecTools)"
    assert record["converged"]["vs_strongest"] == "+14.3 % (95 % CI +1.0 to +20.0 %)"


def test_a_record_named_by_folder_takes_a_split_named_by_its_data_given_the_folder(out, tmp_path_factory):
    """Games: the record says "amazon-games-2018", the split "Games-6k" (its files' name). add-peer takes it when the
    dataset folder is given and is the record's and loads as the split's data; otherwise it is refused by name."""
    record = report(out, "toy", "cmd", "machine", suite="converged")
    record["converged"]["dataset"] = "toy-folder, 10 random users"
    _peer(out, "recbole-sasrec", "SASRec (RecBole 1.2.1)", 0.115)
    folder = tmp_path_factory.mktemp("data") / "toy-folder"
    folder.mkdir()
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                      + "".join(f"u{u}\ti{i}\t{i}\n" for u in range(4) for i in range(4)))
    with pytest.raises(ValueError, match="give the dataset folder"):
        add_peers(json.loads(json.dumps(record)), out)
    with pytest.raises(ValueError, match="split of 'toy'"):
        add_peers(json.loads(json.dumps(record)), out, dataset=str(folder.parent / "elsewhere"))
    assert add_peers(record, out, dataset=str(folder)) == ["SASRec (RecBole 1.2.1)"]


def test_a_capped_peer_is_replaced_by_its_longer_run_and_only_then(out):
    """A peer that ran into its epoch cap, run again with a higher cap: the longer run replaces its row and entry
    (one row per model); the same capped run again is nothing to add."""
    import shutil

    peers = out / "leave_one_out" / "peers"
    shutil.rmtree(peers / "rectools-bert4rec")
    _peer(out, "rectools-bert4rec", "BERT4Rec (RecTools)", 0.09, early_stopped=False)
    record = report(out, "toy", "cmd", "machine", suite="converged")
    assert record["converged"]["models"]["BERT4Rec (RecTools)"]["capped"]
    with pytest.raises(ValueError, match="no finished peer"):
        add_peers(record, out)
    shutil.rmtree(peers / "rectools-bert4rec")
    (peers / "rectools-bert4rec").mkdir()
    (peers / "rectools-bert4rec" / "metrics.json").write_text(json.dumps({
        "label": "BERT4Rec (RecTools)", "epochs": 400, "best_epoch": 350, "patience": 50, "early_stopped": True,
        "test": {"NDCG@10": 0.11, "Recall@10": 0.2}}))
    full = report(out, "toy", "cmd", "machine", suite="converged")
    assert add_peers(record, out) == ["BERT4Rec (RecTools)"]
    assert record["converged"]["models"] == full["converged"]["models"]
    assert sorted(record["rows"]) == sorted(full["rows"])
    assert [row[0] for row in record["rows"]].count("BERT4Rec (RecTools)") == 1
    assert "Replaced on" in record["setup"] and "BERT4Rec (RecTools) (60 epochs before)" in record["setup"]
    assert "add-peer): BERT4Rec" not in record["setup"]  # not said "added": the row was there


def test_nothing_to_add_another_split_or_no_view_is_refused_by_name(out):
    record = report(out, "toy", "cmd", "machine", suite="converged")
    with pytest.raises(ValueError, match="no finished peer .* that the record lacks"):
        add_peers(record, out)
    _peer(out, "recbole-sasrec", "SASRec (RecBole 1.2.1)", 0.115)
    other = json.loads(json.dumps(record))
    other["converged"]["dataset"] = "ml-1m, 1,000 random users"
    with pytest.raises(ValueError, match="split of 'toy', but the record is about 'ml-1m"):
        add_peers(other, out)
    with pytest.raises(ValueError, match="has no converged view"):
        add_peers(report(out, "toy", "cmd", "machine", suite="steer"), out)
    unchanged = json.loads(json.dumps(record))
    with pytest.raises(ValueError):
        add_peers(other, out)
    assert record == unchanged  # a refused amendment changes nothing


def _point(valid, test, epochs=60, **point):
    return {"point": {"dropout": 0.5, "lr": 0.001, "batch_size": 128, **point}, "valid_ndcg10": valid,
            "test": {"NDCG@10": test, "Recall@10": 0.3}, "epochs": epochs, "best_epoch": epochs - 50, "patience": 50,
            "early_stopped": True}


def _sweep(tmp_path, name, dataset, *points):
    out = tmp_path / name
    out.mkdir()
    best = max(points, key=lambda p: p["valid_ndcg10"])
    (out / "sweep.json").write_text(json.dumps({"dataset": dataset, "points": list(points),
                                                "chosen": best["point"]}))
    return out


def test_a_later_sweep_point_joins_its_column_and_is_chosen_there_only_if_it_validates_higher(tmp_path):
    from bench.sasrec_sweep import report as sweep_report

    first = _sweep(tmp_path, "a", "toy", _point(0.10, 0.09, dropout=0.2), _point(0.12, 0.10))
    record = sweep_report([first], "cmd", "machine")
    later = json.loads(_sweep(tmp_path, "b", "toy", _point(0.13, 0.08, attn_dropout=0.5)).joinpath(
        "sweep.json").read_text())
    both = _sweep(tmp_path, "c", "toy", _point(0.10, 0.09, dropout=0.2), _point(0.12, 0.10),
                  _point(0.13, 0.08, attn_dropout=0.5))
    assert add_sweep_points(record, later, today="2026-12-06") == "toy"
    full = sweep_report([both], "cmd", "machine")
    assert sorted(record["rows"]) == sorted(full["rows"]) and record["reading"] == full["reading"]
    assert "Added on 2026-12-06 to the toy column (bench.sasrec_sweep report --amend): " \
        "dropout0.5-lr0.001-batch128-attn_dropout0.5." in record["setup"]  # the new point only
    with pytest.raises(ValueError, match="has these points already"):
        add_sweep_points(record, later)
    weaker = json.loads(_sweep(tmp_path, "d", "toy", _point(0.11, 0.2, lr=0.002)).joinpath("sweep.json").read_text())
    add_sweep_points(record, weaker)
    assert "chosen dropout0.5-lr0.001-batch128-attn_dropout0.5" in record["reading"]  # still the best validating
    reading = record["reading"]
    tie = json.loads(_sweep(tmp_path, "e", "toy", _point(0.13, 0.3, lr=0.003)).joinpath("sweep.json").read_text())
    add_sweep_points(record, tie)  # 0.1300 against 0.1300: the earlier choice stays, and its reading
    assert record["reading"] == reading and "**0.1300 / 0.0800" in str(record["rows"])
    strided = _sweep(tmp_path, "f", "toy", _point(0.12, 0.10), _point(0.14, 0.09, train_stride=10))
    add_sweep_points(record, json.loads(strided.joinpath("sweep.json").read_text()), today="2026-12-07")
    assert record["setup"].endswith("to the toy column (bench.sasrec_sweep report --amend): "
                                    "dropout0.5-lr0.001-batch128-train_stride10. train_stride: training windows "
                                    "overlap by 50 - S items (S the stride) and the loss counts each window's last S "
                                    "labels, so every target is predicted from at least 51 - S earlier items "
                                    "(RecBole predicts each from its whole prefix).")
    with pytest.raises(ValueError, match="no column 'games, patience 50'"):
        add_sweep_points(record, {**weaker, "dataset": "games"})


def test_a_better_validating_sweep_point_becomes_our_sasrec_and_moves_the_gains(out):
    record = report(out, "toy", "cmd", "machine", suite="converged")
    row = next(r for r in record["rows"] if r[0] == "SASRec (ours)")
    row[record["columns"].index("valid (W / LOO)")] = "– / 0.1100"  # the fixture's SASRec validated 0.11
    weaker = {"dataset": "toy", "points": [_point(0.105, 0.2)], "chosen": _point(0.105, 0.2)["point"]}
    assert not adopt_sasrec(record, weaker)  # validates lower: the record's own choice stays
    better = {"dataset": "toy", "points": [_point(0.12, 0.11, 120, attn_dropout=0.5, post_ln=True)],
              "chosen": _point(0.12, 0.11, attn_dropout=0.5, post_ln=True)["point"]}
    assert adopt_sasrec(record, better)
    assert not adopt_sasrec(record, {**better, "points": [{**better["points"][0], "valid_ndcg10": 0.12003}]})
    view = record["converged"]
    assert view["models"]["SASRec (ours)"] == {"NDCG@10": 0.11, "epochs": 120, "patience": 50,
                                               "settings": "dropout 0.5, lr 0.001, batch 128, attn_dropout 0.5, post_ln"}
    assert (view["strongest"], view["vs_strongest"]) == ("SASRec (ours)", "+9.1 %")  # HyMiRec 0.12 vs 0.11
    checks = {c["comparison"]: c["measured"] for c in record["checks"]}
    assert checks["HyMiRec (preset + long history) vs our SASRec, leave-one-out NDCG@10"] == "+9.1 %"
    row = next(r for r in record["rows"] if r[0] == "SASRec (ours)")
    assert row[record["columns"].index("LOO N@10")] == "0.1100" and row[-2:] == ["– / 0.1200", "– / 120"]
    assert "validates 0.1200 against the earlier choice's 0.1100" in record["setup"]
    with pytest.raises(ValueError, match="the sweep is on 'games'"):
        adopt_sasrec(record, {**better, "dataset": "games"})


def _preset(root, valid, test, sasrec_valid, sasrec_test, **sasrec_layout):
    run = root / "leave_one_out" / "preset"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "hymirec": {"test": {"NDCG@10": test, "Recall@10": 0.2, "users": 9}, "epochs": 30, "valid_best": valid},
        "popularity": {"test": {"NDCG@10": 0.02}}, "dataset": {"name": "toy"},
        "sasrec": {"test": {"NDCG@10": sasrec_test, "Recall@10": 0.2}, "valid_best_ndcg10": sasrec_valid, "epochs": 40},
        "config": {"train": {"epochs": 200, "sasrec_epochs": 1000, "patience": 10, "sasrec_patience": 10,
                             **{f"sasrec_{k}": v for k, v in sasrec_layout.items()}}, "hybrid": {"long_len": 512}}}))


def _assert_as_the_full_report(record, full):
    assert record["converged"]["models"] == full["converged"]["models"]
    assert (record["converged"]["strongest"], record["converged"]["vs_strongest"]) == (
        full["converged"]["strongest"], full["converged"]["vs_strongest"])
    assert sorted(record["rows"]) == sorted(full["rows"])
    assert sorted(map(str, record["checks"])) == sorted(map(str, full["checks"]))


@pytest.mark.parametrize("later", [
    {"valid": 0.14, "test": 0.125, "sasrec_valid": 0.115, "sasrec_test": 0.105},  # both win: both re-chosen
    {"valid": 0.11, "test": 0.130, "sasrec_valid": 0.105, "sasrec_test": 0.120},  # neither wins on validation
    {"valid": 0.14, "test": 0.125, "sasrec_valid": 0.105, "sasrec_test": 0.120},  # HyMiRec wins, its SASRec does not
])
def test_a_later_warm_start_run_joins_as_the_full_report_would_choose_it(tmp_path, later):
    _preset(tmp_path / "tuned", 0.12, 0.110, 0.110, 0.100, input_norm=True)
    _preset(tmp_path / "plain", 0.13, 0.115, 0.108, 0.101)
    record = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged", warm_starts=[tmp_path / "plain"])
    _preset(tmp_path / "fullrb", **later, input_norm=True, post_ln=True)
    full = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged",
                  warm_starts=[tmp_path / "plain", tmp_path / "fullrb"])
    label = add_warm_start(record, tmp_path / "fullrb")
    assert label == "HyMiRec preset, warm start: SASRec dropout 0.2, lr 0.001, batch 128, post_ln, input_norm"
    _assert_as_the_full_report(record, full)
    with pytest.raises(ValueError, match="has a row .* already"):
        add_warm_start(record, tmp_path / "fullrb")


def _dropout_candidate(root, variant, valid, test, dropout, stride=0, llm=None, **sasrec_layout):
    """A candidate of root's preset (stage 2 alone on its SASRec: no SASRec of its own in metrics.json): a dropout,
    stride or LLM-backbone variant (``llm``: its hybrid.llm settings beside the dropout)."""
    run = root / "leave_one_out" / variant
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "hymirec": {"test": {"NDCG@10": test, "Recall@10": 0.2, "users": 9}, "epochs": 20, "valid_best": valid},
        "popularity": {"test": {"NDCG@10": 0.02}}, "dataset": {"name": "toy"},
        "config": {"train": {"epochs": 200, "sasrec_epochs": 1000, "patience": 10, "sasrec_patience": 10,
                             **{f"sasrec_{k}": v for k, v in sasrec_layout.items()}},
                   "hybrid": {"long_len": 512, "train_stride": stride,
                              "llm": {"input_dropout": dropout, **(llm or {})}}}}))


_SMOLLM = {"path": "smollm2", "keep_layers": 4, "init": "pretrained"}


@pytest.mark.parametrize("candidate_valid", [0.15, 0.10])  # the candidate chosen on validation, or not
@pytest.mark.parametrize("variant, dropout, stride, llm, suffix", [
    ("preset-dropout0.3", 0.3, 0, None, "; dropout 0.3"),
    ("preset-dropout0.3-stride10", 0.3, 10, None, "; dropout 0.3; cuts every 10 items"),
    ("smollm2-4", 0.0, 0, _SMOLLM, "; LLM smollm2 (first 4 layers, pretrained)"),
    ("smollm2-4-random", 0.0, 0, {**_SMOLLM, "init": "random"}, "; LLM smollm2 (first 4 layers, random)"),
    ("smollm2-4-lora", 0.0, 0, {**_SMOLLM, "finetune": "lora"}, "; LLM smollm2 (first 4 layers, pretrained, lora)")])
def test_a_later_candidate_joins_as_the_full_report_would_choose_it(tmp_path, candidate_valid, variant, dropout,
                                                                    stride, llm, suffix):
    _preset(tmp_path / "tuned", 0.12, 0.110, 0.110, 0.100, input_norm=True)
    _preset(tmp_path / "plain", 0.13, 0.115, 0.108, 0.101)
    record = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged", warm_starts=[tmp_path / "plain"])
    _preset(tmp_path / "fullrb", 0.14, 0.125, 0.115, 0.105, input_norm=True, post_ln=True)
    _dropout_candidate(tmp_path / "fullrb", variant, candidate_valid, 0.128, dropout, stride, llm, input_norm=True,
                       post_ln=True)
    full = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged",
                  warm_starts=[tmp_path / "plain", tmp_path / "fullrb"])
    labels = CONVERGED_AMENDMENTS["add-warm-start"](record, tmp_path / "fullrb", None, ["preset", variant], None)
    assert labels.endswith("HyMiRec preset, warm start: SASRec dropout 0.2, lr 0.001, batch 128, post_ln, input_norm"
                           + suffix)
    _assert_as_the_full_report(record, full)
    with pytest.raises(ValueError, match="'k3' is not a candidate for HyMiRec's preset"):
        add_warm_start(record, tmp_path / "fullrb", "k3")


def test_a_warm_start_run_of_another_dataset_or_unfinished_is_refused(tmp_path):
    _preset(tmp_path / "tuned", 0.12, 0.110, 0.110, 0.100)
    _preset(tmp_path / "plain", 0.13, 0.115, 0.108, 0.101)
    record = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged", warm_starts=[tmp_path / "plain"])
    with pytest.raises(ValueError, match="no finished preset run"):
        add_warm_start(record, tmp_path / "missing")
    _preset(tmp_path / "other", 0.2, 0.2, 0.2, 0.2)
    metrics = tmp_path / "other" / "leave_one_out" / "preset" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"name": "toy"', '"name": "toys"'))
    with pytest.raises(ValueError, match="ran on 'toys', the record is on 'toy'"):
        add_warm_start(record, tmp_path / "other")
    _preset(tmp_path / "later", 0.2, 0.2, 0.2, 0.2, post_ln=True)
    alone = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged")  # no warm-start candidates
    with pytest.raises(ValueError, match="not chosen among warm starts"):
        add_warm_start(alone, tmp_path / "later")
