"""The converged view's choices on validation: HyMiRec's warm start, dropout and learning-rate candidates, the
text-only column, and which SASRec is "ours" (bench/converged_view.py through the mechanisms report)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.mechanisms import run_config
from bench.mechanisms_report import report
from mechanisms_support import write_run as _write


def test_the_converged_view_says_where_items_come_from_sasrec(tmp_path):
    """Without item text, stage 1 is SASRec's id table: "ids from scratch" still starts from SASRec's items."""
    extra = {"sasrec": {"test": {"NDCG@10": 0.10}}, "item_representation": {"kind": "item_id_embedding"}}
    _write(tmp_path, "leave_one_out", "preset-ids-from-scratch", {"NDCG@10": 0.09}, extra=extra)
    view = report(tmp_path, "toy", "cmd", "machine", suite="converged")["converged"]
    assert view["models"]["HyMiRec, ids from scratch"]["settings"] == "items: our SASRec's id table (no item text)"


def test_hymirecs_warm_start_is_chosen_on_its_validation_and_our_sasrec_stays_its_own_choice(tmp_path):
    """--warm-start-from: HyMiRec started from another SASRec is a row; the converged view and the checks take the
    HyMiRec run validation chose, while "SASRec (ours)" stays OUT's (chosen on SASRec's own validation)."""
    def preset(root, valid, test, sasrec_test, layout):
        _write(root, "leave_one_out", "preset", {"NDCG@10": test, "users": 9}, valid=valid, extra={
            "sasrec": {"test": {"NDCG@10": sasrec_test}}, "dataset": {"name": "toy"},
            "config": {"train": {"epochs": 200, "sasrec_epochs": 1000, "sasrec_input_norm": layout},
                       "hybrid": {"long_len": 512}}})

    preset(tmp_path / "tuned", valid=0.12, test=0.110, sasrec_test=0.100, layout=True)
    preset(tmp_path / "plain", valid=0.13, test=0.115, sasrec_test=0.101, layout=False)
    record = report(tmp_path / "tuned", "toy", "cmd", "machine", suite="converged", warm_starts=[tmp_path / "plain"])
    view = record["converged"]
    assert view["models"]["HyMiRec"]["NDCG@10"] == 0.115  # validation 0.13 beats 0.12
    assert view["models"]["HyMiRec"]["settings"] == (
        "warm start: SASRec dropout 0.2, lr 0.001, batch 128, chosen on HyMiRec's validation (0.1300 vs 0.1200)")
    assert view["models"]["SASRec (ours)"]["NDCG@10"] == 0.100  # not the other run's SASRec
    assert view["vs_strongest"] == "+15.0 %"
    checks = {c["comparison"]: c["measured"] for c in record["checks"]}
    assert checks["HyMiRec (preset + long history, warm start: SASRec dropout 0.2, lr 0.001, batch 128) vs our "
                  "SASRec, leave-one-out NDCG@10"] == "+15.0 %"
    rows = {r[0]: r[record["columns"].index("LOO N@10")] for r in record["rows"]}
    assert rows["HyMiRec preset, warm start: SASRec dropout 0.2, lr 0.001, batch 128"] == "0.1150"
    assert rows["HyMiRec preset, warm start: SASRec dropout 0.2, lr 0.001, batch 128, input_norm"] == "0.1100"
    assert "HyMiRec preset" not in rows
    # the other way round, OUT's own run is chosen; another split is refused by name
    assert report(tmp_path / "plain", "toy", "c", "m", suite="converged",
                  warm_starts=[tmp_path / "tuned"])["converged"]["models"]["HyMiRec"]["NDCG@10"] == 0.115
    preset(tmp_path / "other", valid=0.2, test=0.2, sasrec_test=0.1, layout=False)
    metrics = tmp_path / "other" / "leave_one_out" / "preset" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"name": "toy"', '"name": "toys"'))
    with pytest.raises(SystemExit, match="--warm-start-from .*other: another dataset or split"):
        report(tmp_path / "tuned", "toy", "c", "m", suite="converged", warm_starts=[tmp_path / "other"])


def test_hymirecs_dropout_candidates_compete_with_its_preset_on_validation(tmp_path):
    """A dropout candidate trained beside the preset (stage 2 alone on its SASRec) becomes HyMiRec's row when its
    validation is higher, whatever its test score; it shows as one named row, not as a loose variant row."""
    sasrec = {"sasrec": {"test": {"NDCG@10": 0.100}}, "dataset": {"name": "toy"}}
    config = lambda drop: {"config": {"train": {"epochs": 200, "sasrec_epochs": 1000},  # noqa: E731
                                      "hybrid": {"long_len": 512, "llm": {"input_dropout": drop}}}}
    _write(tmp_path, "leave_one_out", "preset", {"NDCG@10": 0.110, "users": 9}, valid=0.12,
           extra=sasrec | config(0.0))
    _write(tmp_path, "leave_one_out", "preset-dropout0.5", {"NDCG@10": 0.105, "users": 9}, valid=0.13,
           extra={"dataset": {"name": "toy"}} | config(0.5))
    record = report(tmp_path, "toy", "cmd", "machine", suite="converged")
    hymirec = record["converged"]["models"]["HyMiRec"]
    assert hymirec["NDCG@10"] == 0.105  # validation 0.13 beats 0.12: chosen although its test score is lower
    assert hymirec["settings"] == ("warm start: SASRec dropout 0.2, lr 0.001, batch 128; dropout 0.5, chosen on "
                                   "HyMiRec's validation (0.1300 vs 0.1200)")
    rows = {r[0]: r[record["columns"].index("LOO N@10")] for r in record["rows"]}
    assert rows["HyMiRec preset, warm start: SASRec dropout 0.2, lr 0.001, batch 128; dropout 0.5"] == "0.1050"
    assert rows["HyMiRec preset, warm start: SASRec dropout 0.2, lr 0.001, batch 128"] == "0.1100"
    assert "HyMiRec preset-dropout0.5" not in rows
    # the candidate with the lower validation loses
    path = tmp_path / "leave_one_out" / "preset-dropout0.5" / "metrics.json"
    path.write_text(path.read_text().replace('"valid_best": 0.13', '"valid_best": 0.11'))
    assert report(tmp_path, "toy", "c", "m", suite="converged")["converged"]["models"]["HyMiRec"]["NDCG@10"] == 0.110


def _preset_and_two_rates(tmp_path, variant: str, at_2e4: tuple[float, float], at_1e3: tuple[float, float]) -> dict:
    """A converged OUT: the preset (test 0.110) with our SASRec (0.100), and ``variant`` at the preset's learning rate
    and at SASRec's (``variant``-lr0.001), each given as (test NDCG@10, best validation); → its report."""
    sasrec = {"sasrec": {"test": {"NDCG@10": 0.100}}}
    _write(tmp_path, "leave_one_out", "preset", {"NDCG@10": 0.110}, valid=0.12, extra=sasrec)
    for name, (test, valid), lr in ((variant, at_2e4, 2e-4), (f"{variant}-lr0.001", at_1e3, 1e-3)):
        config = {"config": {"train": {"lr": lr, "epochs": 200, "sasrec_epochs": 1000}, "hybrid": {"long_len": 512}}}
        _write(tmp_path, "leave_one_out", name, {"NDCG@10": test}, valid=valid, extra=config)
    return report(tmp_path, "toy", "cmd", "machine", suite="converged")


def test_ids_from_scratch_takes_the_learning_rate_validation_chose(tmp_path):
    """Two ids-from-scratch runs (the preset's lr and SASRec's): the row and the check take the higher validation."""
    record = _preset_and_two_rates(tmp_path, "preset-ids-from-scratch", (0.095, 0.10), (0.090, 0.11))
    scratch = record["converged"]["models"]["HyMiRec, ids from scratch"]
    assert scratch["NDCG@10"] == 0.090  # validation 0.11 beats 0.10, although its test score is lower
    assert scratch["settings"] == "lr 0.001, chosen on validation (0.1100 vs 0.1000)"
    checks = {c["comparison"]: c["measured"] for c in record["checks"]}
    assert checks["HyMiRec without the SASRec warm start (ids from scratch, preset-ids-from-scratch-lr0.001 chosen on "
                  "validation) vs our SASRec, leave-one-out NDCG@10"] == "-10.0 %"


def test_text_only_is_its_own_column_with_the_learning_rate_validation_chose(tmp_path):
    """HyMiRec with items from text alone (no id tables): its own row and check, the candidate validation chose."""
    record = _preset_and_two_rates(tmp_path, "preset-text-only", (0.105, 0.115), (0.120, 0.110))
    text = record["converged"]["models"]["HyMiRec, text only (no id tables)"]
    assert text["NDCG@10"] == 0.105  # validation 0.115 beats 0.110, although its test score is lower
    assert text["settings"] == "lr 0.0002, chosen on validation (0.1150 vs 0.1100)"
    assert "HyMiRec, ids from scratch" not in record["converged"]["models"]  # none trained
    checks = {c["comparison"]: c["measured"] for c in record["checks"]}
    assert checks["HyMiRec with items from their text only (no id tables, no warm start; preset-text-only chosen on "
                  "validation) vs our SASRec, leave-one-out NDCG@10"] == "+5.0 %"
    assert record["converged"]["models"]["HyMiRec"]["NDCG@10"] == 0.110  # the preset's row is untouched
    (tmp_path / "leave_one_out" / "preset-text-only" / "metrics.json").unlink()  # one candidate: nothing chosen
    checks = {c["comparison"] for c in report(tmp_path, "toy", "cmd", "machine", suite="converged")["checks"]}
    assert ("HyMiRec with items from their text only (no id tables, no warm start; preset-text-only-lr0.001) vs our "
            "SASRec, leave-one-out NDCG@10") in checks


def test_text_only_variants_have_no_id_table_to_warm_start():
    from bench.mechanism_variants import TEXT_CANDIDATES, VARIANTS

    for variant in TEXT_CANDIDATES:
        config = run_config("toy", Path("runs/x"), "leave_one_out", variant, None)
        assert not config.hybrid.item_id_residual and not config.hybrid.recent_id_embedding
        assert config.hybrid.id_init == "zeros" and config.hybrid.long_len == 1024
    assert run_config("toy", Path("runs/x"), "leave_one_out", "preset-text-only-lr0.001", None).train.lr == 0.001
    assert "train.lr=0.001" not in VARIANTS["preset-text-only"]


def test_our_sasrec_is_the_best_validating_one_of_the_warm_start_outs(tmp_path):
    """A sweep point chosen after OUT's runs were made is trained in a warm-start OUT: that OUT's SASRec, which
    validated higher, becomes "SASRec (ours)" (cell, table row, checks); a lower-validating one never does."""
    def preset(root, sasrec_valid, sasrec_test, layout):
        _write(root, "leave_one_out", "preset", {"NDCG@10": 0.11, "users": 9}, valid=0.12, extra={
            "sasrec": {"test": {"NDCG@10": sasrec_test}, "valid_best_ndcg10": sasrec_valid, "epochs": 20},
            "dataset": {"name": "toy"}, "config": {"train": {"epochs": 200, "sasrec_epochs": 1000,
                                                              "sasrec_post_ln": layout}, "hybrid": {"long_len": 512}}})

    preset(tmp_path / "old", sasrec_valid=0.0383, sasrec_test=0.0358, layout=False)
    preset(tmp_path / "new", sasrec_valid=0.0385, sasrec_test=0.0343, layout=True)
    record = report(tmp_path / "old", "toy", "cmd", "machine", suite="converged", warm_starts=[tmp_path / "new"])
    ours = record["converged"]["models"]["SASRec (ours)"]
    assert (ours["NDCG@10"], ours["settings"]) == (0.0343, "dropout 0.2, lr 0.001, batch 128, post_ln")
    rows = {r[0]: r[record["columns"].index("LOO N@10")] for r in record["rows"]}
    assert rows["SASRec (ours)"] == "0.0343"
    assert any(c["comparison"].endswith("vs our SASRec, leave-one-out NDCG@10") and c["measured"] == "+220.7 %"
               for c in record["checks"])  # HyMiRec 0.11 against the chosen SASRec's 0.0343, not 0.0358
    # the other way round: OUT's SASRec validated lower, so the warm-start OUT's is still ours
    view = report(tmp_path / "new", "toy", "c", "m", suite="converged", warm_starts=[tmp_path / "old"])["converged"]
    assert view["models"]["SASRec (ours)"]["NDCG@10"] == 0.0343
