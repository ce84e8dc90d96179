"""The mechanisms benchmark: its variants differ in the one setting they name, and its report computes the
comparisons from the runs' own metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.mechanisms import run_config
from bench.mechanisms_report import report
from mechanisms_support import write_run as _write


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for key in a:
        if isinstance(a[key], dict):
            out |= _diff(a[key], b[key], prefix + key + ".")
        elif a[key] != b[key]:
            out.add(prefix + key)
    return out


def test_variants_differ_in_the_one_setting_they_name(tmp_path):
    def cfg(variant, protocol="window"):
        c = run_config("synthetic", tmp_path / "r", protocol, variant, None).to_dict()
        return c

    assert _diff(cfg("k1"), cfg("k3")) == {"hybrid.n_interests"}
    assert _diff(cfg("k3"), cfg("k3-recent-only")) == {"hybrid.use_lightweight"}
    assert _diff(cfg("k3"), cfg("k3-exact")) == {"hybrid.use_codebook"}
    assert _diff(cfg("k3"), cfg("k3-nearest")) == {"hybrid.interest_routing"}
    assert _diff(cfg("k3"), cfg("k3-holistic")) == {"hybrid.holistic_interest"}
    assert _diff(cfg("k3"), cfg("k3-maxloss")) == {"hybrid.max_merge_weight"}
    assert _diff(cfg("k3-maxloss"), cfg("k5-maxloss")) == {"hybrid.n_interests"}
    assert _diff(cfg("k3-maxloss"), cfg("k3-maxonly")) == {"hybrid.dmil_weight"}
    assert _diff(cfg("k3-maxonly"), cfg("k3-softonly")) == {"hybrid.max_merge_softness"}
    assert _diff(cfg("k3"), cfg("k3-seeded")) == {"hybrid.llm.query_seeds"}
    assert _diff(cfg("preset", "leave_one_out"), cfg("preset-recent-only", "leave_one_out")) == {
        "hybrid.use_lightweight"}
    loo = [cfg(v, "leave_one_out") for v in ("smollm2-4", "smollm2-4-random", "smollm2-4-lora")]
    assert _diff(loo[0], loo[1]) == {"hybrid.llm.init"} and _diff(loo[0], loo[2]) == {"hybrid.llm.finetune"}
    base = cfg("k3")
    assert base["hybrid"]["long_len"] == 1024 and base["hybrid"]["long_window"] == "older"
    assert base["train"]["patience"] == base["train"]["sasrec_patience"] == 10  # one rule for every model
    assert base["train"]["max_eval_users"] is None  # validated on every user, as the sweep and the peers are
    assert _diff(cfg("k3"), cfg("k3", "leave_one_out")) == {"train.protocol"}


@pytest.fixture
def launched(monkeypatch):
    """bench.mechanisms.run with its training processes recorded, not started: each launch's config overrides."""
    import bench.mechanisms as mech

    launches = []
    monkeypatch.setattr(mech, "_launch", lambda dataset, out, p, v, stage1, sasrec, budget, extra:
                        launches.append(list(extra)) or (f"{p}/{v}", None))
    monkeypatch.setattr(mech, "_wait", lambda procs: {name: 0 for name, _ in procs})
    monkeypatch.setattr(mech, "_point_stage1_at", lambda *a: None)
    monkeypatch.setattr(mech, "base_stage1", lambda stage1: stage1)  # no prepared stage 1 here
    return launches


def test_run_patience_applies_to_every_model_and_the_sweep_sets_its_sasrec(tmp_path, launched):
    import bench.mechanisms as mech

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    point = {"dropout": 0.5, "lr": 1e-3, "batch_size": 128}
    (sweep / "sweep.json").write_text(json.dumps({"dataset": "synthetic", "chosen": point, "points": [
        {"point": point, "patience": 50}]}))
    mech.run("synthetic", tmp_path / "out", None, suite="converged", sasrec_from=sweep, patience=30)
    cfg = run_config("synthetic", tmp_path / "r", "leave_one_out", "preset", None, launched[0]).train
    assert (cfg.patience, cfg.sasrec_patience, cfg.sasrec_dropout) == (30, 50, 0.5)  # SASRec: as the sweep chose it
    assert len(launched) == 2 and launched[0] == launched[1]  # the ids-from-scratch variant: the same rule
    assert cfg.sasrec_weights is None  # the sweep kept no trained model: the base run trains its SASRec
    # where the sweep kept the chosen point's model, the base run (the one that trains SASRec) loads it instead
    from bench.sasrec_sweep import weights_path

    weights_path(sweep, point).write_bytes(b"a trained model")
    launched.clear()
    mech.run("synthetic", tmp_path / "out2", None, suite="converged", sasrec_from=sweep, patience=30)
    base, variant = (run_config("synthetic", tmp_path / "r", "leave_one_out", "preset", None, e).train for e in launched)
    assert base.sasrec_weights == variant.sasrec_weights == str(weights_path(sweep, point).resolve())
    # so a variant needs no base run in OUT: it loads its own copy beside the prepared stage 1
    launched.clear()
    mech.run("synthetic", tmp_path / "out3", None, suite="dropout", sasrec_from=sweep, patience=30,
             variants=["preset-dropout0.3"])
    assert len(launched) == 1 and any(o.startswith("train.sasrec_weights=") for o in launched[0])
    weights_path(sweep, point).unlink()
    with pytest.raises(SystemExit, match="--variant needs finished base runs"):
        mech.run("synthetic", tmp_path / "out4", None, suite="dropout", sasrec_from=sweep, variants=["preset-dropout0.3"])
    with pytest.raises(SystemExit):
        mech.main(["run", "--dataset", "synthetic", "--out", str(tmp_path / "x"), "--patience", "5"])


def test_a_seed_reaches_every_model_of_an_out_and_seed_0_changes_nothing(tmp_path, launched):
    """`run --seed 1` replicates a comparison: the base run (SASRec + HyMiRec) and each variant train with that seed."""
    import bench.mechanisms as mech

    mech.run("synthetic", tmp_path / "seed1", None, suite="converged", seed=1)
    mech.run("synthetic", tmp_path / "seed0", None, suite="converged")
    seeds = [run_config("synthetic", tmp_path / "r", "leave_one_out", "preset", None, extra).train.seed
             for extra in launched]
    assert seeds == [1, 1, 0, 0]  # base and ids-from-scratch of each OUT
    assert launched[2] == launched[3] == []  # seed 0: the very configs earlier runs (and their stage 1) were made with




def test_report_compares_the_runs_it_finds(tmp_path):
    w = lambda r, c: {"Recall@50": r, "Coverage@50": c}  # noqa: E731
    _write(tmp_path, "window", "k1", w(0.20, 0.50))
    _write(tmp_path, "window", "k3", w(0.22, 0.60), quota=w(0.24, 0.70))
    _write(tmp_path, "window", "k3-exact", w(0.22, 0.60), quota=w(0.24, 0.70))
    _write(tmp_path, "leave_one_out", "k1", {"NDCG@10": 0.100})
    _write(tmp_path, "leave_one_out", "k3", {"NDCG@10": 0.099})
    _write(tmp_path, "leave_one_out", "preset", {"NDCG@10": 0.12}, extra={"sasrec": {"test": {"NDCG@10": 0.10}}})
    record = report(tmp_path, "toy", "cmd", "machine")
    checks = {c["comparison"].split(",")[0] + c["comparison"].split(",")[1]: c["measured"] for c in record["checks"]}
    assert checks["K=3 vs K=1 window Recall@50 (max merge; quota merge)"] == "+10.0 %; +20.0 %"
    assert checks["K=3 vs K=1 window Coverage@50 (max merge; quota merge)"] == "+20.0 %; +40.0 %"
    assert checks["K=3 vs K=1 leave-one-out NDCG@10"] == "-1.0 %"
    assert any(c["measured"] == "+20.0 %" and "SASRec" in c["comparison"] for c in record["checks"])
    assert not any("recent only" in c["comparison"] for c in record["checks"])  # not run here: not reported
    _write(tmp_path, "leave_one_out", "preset-recent-only", {"NDCG@10": 0.10})
    record = report(tmp_path, "toy", "cmd", "machine", suite="long-loo")
    long_loo = [c for c in record["checks"] if "recent only, leave-one-out NDCG@10 (preset" in c["comparison"]]
    assert [c["measured"] for c in long_loo] == ["+20.0 %"] and "long coded history" in record["area"]
    assert '["planted"]' in record["setup"]
    assert [r[0] for r in record["rows"]][:2] == ["Popularity", "HyMiRec k1"]
    k3 = next(r for r in record["rows"] if r[0] == "HyMiRec k3")  # one row: window and leave-one-out side by side
    assert k3[record["columns"].index("R@50")] == "0.2200" and k3[record["columns"].index("LOO N@10")] == "0.0990"


def test_report_picks_the_k3_training_on_validation_not_on_test(tmp_path):
    w = lambda r, c: {"Recall@50": r, "Coverage@50": c}  # noqa: E731
    _write(tmp_path, "window", "k1", w(0.20, 0.50), valid=0.30)
    _write(tmp_path, "window", "k3", w(0.30, 0.60), quota=w(0.30, 0.60), valid=0.31)  # best on test
    _write(tmp_path, "window", "k3-maxloss", w(0.21, 0.55), quota=w(0.22, 0.60), valid=0.33)  # best on validation
    _write(tmp_path, "leave_one_out", "k1", {"NDCG@10": 0.100}, valid=0.09)
    _write(tmp_path, "leave_one_out", "k3-maxloss", {"NDCG@10": 0.097}, valid=0.09)
    record = report(tmp_path, "toy", "cmd", "machine", suite="interests")
    chosen = {c["comparison"]: c["measured"] for c in record["checks"] if "chosen on validation" in c["comparison"]}
    assert chosen == {
        "K≥3 chosen on validation (k3-maxloss) vs K=1, window Recall@50 (max; quota)": "+5.0 %; +10.0 %",
        "K≥3 chosen on validation (k3-maxloss) vs K=1, window Coverage@50 (max; quota)": "+10.0 %; +20.0 %",
        "K≥3 chosen on validation (k3-maxloss) vs K=1, leave-one-out NDCG@10": "-3.0 %"}
    k1_row = next(r for r in record["rows"] if r[0] == "HyMiRec k1")
    assert k1_row[record["columns"].index("valid (W / LOO)")] == "0.3000 / 0.0900"  # every row: its validation


def test_a_replicates_record_names_its_seed(tmp_path):
    """A replicate OUT (`run --seed 1`): its converged row says which seed, read from the base run's config."""
    from bench.mechanisms import main

    _write(tmp_path, "leave_one_out", "preset", {"NDCG@10": 0.12}, extra={"sasrec": {"test": {"NDCG@10": 0.10}}})
    (tmp_path / "leave_one_out" / "preset" / "config.json").write_text(json.dumps({"train": {"seed": 1}}))
    record = tmp_path / "record.json"
    main(["report", "--suite", "converged", "--dataset", "data/games", "--out", str(tmp_path), "--record", str(record)])
    assert json.loads(record.read_text())["converged"]["dataset"] == "games, seed 1"


def test_report_adds_converged_peers_and_the_headroom(tmp_path):
    """A peer run by the `peer` step is a row and competes for "the strongest SASRec"; the headroom step's oracle
    and history-cluster rows come with their K = 3 vs K = 1 comparisons."""
    _write(tmp_path, "leave_one_out", "preset", {"NDCG@10": 0.12}, extra={"sasrec": {"test": {"NDCG@10": 0.10}}})
    peer = tmp_path / "leave_one_out" / "peers" / "recbole-sasrec"
    peer.mkdir(parents=True)
    (peer / "metrics.json").write_text(json.dumps({"label": "SASRec (RecBole 1.2.1)", "epochs": 40, "best_epoch": 30,
                                                   "test": {"NDCG@10": 0.11, "Recall@10": 0.2}}))
    _write(tmp_path, "window", "k1", {"Recall@50": 0.3, "Coverage@50": 0.8})
    (tmp_path / "window" / "k1" / "interest_headroom.json").write_text(json.dumps({
        "oracle K=1: centres of the test window": {"Recall@50": 0.5},
        "oracle K=3: centres of the test window": {"Recall@50": 0.8},
        "history clusters K=1 (last 50 items)": {"Recall@50": 0.10},
        "history clusters K=3 (last 50 items)": {"Recall@50": 0.11},
        "K=4 steered: the K=1 interest tilted toward 3 clusters (alpha 0.2; on validation)": {
            "Recall@50": 0.33, "Coverage@50": 0.8, "quota Recall@50": 0.27, "quota Coverage@50": 0.84}}))
    record = report(tmp_path, "toy", "cmd", "machine", suite="converged")
    checks = {c["comparison"]: c["measured"] for c in record["checks"]}
    # the steered row against the same run's K = 1, max merge then quota merge
    assert checks["K=4 steered vs K=1 (the same run's interest), window Recall@50 (max; quota)"] == "+10.0 %; -10.0 %"
    assert checks["K=4 steered vs K=1 (the same run's interest), window Coverage@50 (max; quota)"] == "+0.0 %; +5.0 %"
    assert not any("recent only, window Recall@50 (K=1)" in c for c in checks)  # not run
    _write(tmp_path, "window", "k1-recent-only", {"Recall@50": 0.25, "Coverage@50": 0.8})
    _write(tmp_path, "window", "k1-exact", {"Recall@50": 0.3, "Coverage@50": 0.8})
    checks = {c["comparison"]: c["measured"] for c in report(tmp_path, "toy", "cmd", "machine", "steer")["checks"]}
    assert checks["long coded history (? older items) vs recent only, window Recall@50 (K=1)"] == "+20.0 %"
    assert checks["codes (12 B/item) vs exact embeddings (1,536 B/item), window Recall@50 (K=1)"] == "+0.0 %"
    steered_row = next(r for r in record["rows"] if r[0].startswith("K=4 steered"))
    assert steered_row[record["columns"].index("quota R@50")] == "0.2700"
    assert checks["HyMiRec (preset + long history) vs the strongest SASRec (SASRec (RecBole 1.2.1)), leave-one-out "
                  "NDCG@10"] == "+9.1 %"
    assert checks["oracle, K=3 vs K=1 directions of the test window itself (not a method), window Recall@50"] == "+60.0 %"
    assert checks["history clusters, K=3 vs K=1 (last 50 items, no training), window Recall@50"] == "+10.0 %"
    peer_row = next(r for r in record["rows"] if r[0] == "SASRec (RecBole 1.2.1)")
    assert peer_row[record["columns"].index("LOO N@10")] == "0.1100"
    assert peer_row[record["columns"].index("epochs (W / LOO)")] == "– / 40 (best 30)"
    assert "oracle K=3: centres of the test window, over k1's item vectors" in [r[0] for r in record["rows"]]
    # the converged view's row for this dataset (bench/results_page.converged_section): every model, the strongest
    view = record["converged"]
    assert view["strongest"] == "SASRec (RecBole 1.2.1)" and view["vs_strongest"] == "+9.1 %"
    # the numbers behind that text, for the page's plot (no lists kept here, so no interval)
    assert view["vs_strongest_pct"] == {"gain": 9.09, "low": None, "high": None}
    assert view["models"]["SASRec (RecBole 1.2.1)"] == {"NDCG@10": 0.11, "epochs": 40}  # no published number
    assert view["models"]["HyMiRec"] == {"NDCG@10": 0.12, "epochs": 4}
    assert view["models"]["SASRec (ours)"]["settings"] == "dropout 0.2, lr 0.001, batch 128"  # the defaults
    metrics = tmp_path / "leave_one_out" / "preset" / "metrics.json"  # HyMiRec ran all 4 epochs it was allowed
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "config": {
        "train": {"epochs": 4, "sasrec_epochs": 9, "sasrec_input_norm": True, "sasrec_post_ln": False},
        "hybrid": {"long_len": 64}}}))
    view = report(tmp_path, "toy", "cmd", "machine", suite="converged")["converged"]
    assert view["models"]["HyMiRec"]["capped"]
    assert view["models"]["SASRec (ours)"]["settings"] == "dropout 0.2, lr 0.001, batch 128, input_norm"  # layout on
    assert "converged" not in report(tmp_path, "toy", "cmd", "machine", suite="maxmerge")  # other suites: no row
    # a stronger peer of another model is "the strongest other" of the converged view (not of the SASRec check)
    bert = tmp_path / "leave_one_out" / "peers" / "rectools-bert4rec"
    bert.mkdir()
    (bert / "metrics.json").write_text(json.dumps({"label": "BERT4Rec (RecTools)", "epochs": 50, "best_epoch": 40,
                                                   "patience": 50, "test": {"NDCG@10": 0.115, "Recall@10": 0.2}}))
    record = report(tmp_path, "toy", "cmd", "machine", suite="converged")
    assert record["converged"]["models"]["BERT4Rec (RecTools)"]["patience"] == 50
    assert "capped" not in record["converged"]["models"]["BERT4Rec (RecTools)"]  # no early_stopped: not said capped
    (bert / "metrics.json").write_text(json.dumps({"label": "BERT4Rec (RecTools)", "epochs": 50, "best_epoch": 40,
                                                   "early_stopped": False, "test": {"NDCG@10": 0.115}}))
    assert report(tmp_path, "toy", "cmd", "machine", suite="converged")["converged"]["models"][
        "BERT4Rec (RecTools)"]["capped"]
    assert (record["converged"]["strongest"], record["converged"]["vs_strongest"]) == ("BERT4Rec (RecTools)", "+4.3 %")
    assert any(c["measured"] == "+9.1 %" and "(SASRec (RecBole 1.2.1))" in c["comparison"] for c in record["checks"])
    bert.joinpath("metrics.json").unlink()
    # on the very files S3-Rec published numbers for (its Beauty: 22,363 users, 12,101 items), the peer's SASRec
    # carries the published NDCG@10 to be checked against; on another file of the same name, nothing
    manifest = tmp_path / "leave_one_out" / "peers" / "split" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"dataset": "Beauty", "n_users": 22363, "n_items": 12101}))
    view = report(tmp_path, "Beauty", "cmd", "machine", suite="converged")["converged"]
    assert view["models"]["SASRec (RecBole 1.2.1)"]["published"] == 0.0318
    manifest.write_text(json.dumps({"dataset": "Beauty", "n_users": 1000, "n_items": 12101}))
    view = report(tmp_path, "Beauty", "cmd", "machine", suite="converged")["converged"]
    assert "published" not in view["models"]["SASRec (RecBole 1.2.1)"]


def test_peer_step_scores_a_runner_on_the_same_split_with_our_evaluator(tmp_path):
    """The `peer` step end to end with the reference runner (most popular): its lists, scored by our evaluator,
    equal our own popularity baseline's metrics on the same leave-one-out split; the report then shows its row."""
    import sys

    from bench.peers.converged import run_peer_converged
    from bench.peers.runner import Peer
    from training.data import leave_one_out, load_dataset
    from training.evaluate import evaluate_rankings, popularity_topk

    from tests.bench.peer_support import REFERENCE_RUNNER, write_tiny_dataset

    path = write_tiny_dataset(tmp_path / "data")
    peer = Peer("reference-popularity", "reference", "popularity", "Popularity (reference runner)")
    result = run_peer_converged(str(path), tmp_path / "out", peer.name, peer=peer, python=sys.executable,
                                runner=REFERENCE_RUNNER, log=None)
    data = load_dataset(path)
    split = leave_one_out(data)
    ours = evaluate_rankings(popularity_topk(split.train, data.n_items, split.test.histories, 100), split.test.targets)
    assert result["test"] == ours
    stored = json.loads((tmp_path / "out" / "leave_one_out" / "peers" / peer.name / "metrics.json").read_text())
    assert stored["label"] == peer.label and stored["test"] == ours
    assert stored["patience"] == 10  # every converged run records the patience it stopped on
    assert stored["epoch_cap"] == 300 and stored["early_stopped"]  # 1 epoch: far below the cap
    # a cap the run reached: its record says so (the converged view marks the cell "capped")
    capped = run_peer_converged(str(path), tmp_path / "out", peer.name, peer=peer, python=sys.executable,
                                runner=REFERENCE_RUNNER, log=None, epoch_cap=1)
    assert capped["epoch_cap"] == 1 and not capped["early_stopped"]

    # a later run in the same folder that fails (or pauses) leaves no earlier scores behind to be taken as its own
    from bench.converged_view import finished_peers
    from bench.peers.runner import PeerError

    broken = tmp_path / "broken.py"
    broken.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(PeerError, match="exit 3"):
        run_peer_converged(str(path), tmp_path / "out", peer.name, peer=peer, python=sys.executable, runner=broken,
                           log=None)
    assert peer.name not in finished_peers(tmp_path / "out")
    # and a folder holding a paused run's checkpoint is not finished, whatever else lies in it
    (tmp_path / "out" / "leave_one_out" / "peers" / peer.name / "metrics.json").write_text(json.dumps(capped))
    assert peer.name in finished_peers(tmp_path / "out")
    (tmp_path / "out" / "leave_one_out" / "peers" / peer.name / "checkpoint.pt").write_bytes(b"state")
    assert peer.name not in finished_peers(tmp_path / "out")


def test_peer_step_refuses_a_patience_below_the_rule(capsys):
    from bench.mechanisms import main

    with pytest.raises(SystemExit):
        main(["peer", "--dataset", "synthetic", "--patience", "5"])
    assert "--patience 5: the converged view's rule is at least 10" in capsys.readouterr().err


def test_user_cut_is_written_by_prepare_and_read_from_the_base_run(tmp_path):
    from bench.mechanisms import user_cut

    src = tmp_path / "toy"
    src.mkdir()
    rows = [f"u{u}\ti{i}\t{i}" for u in range(10) for i in range(3)]
    (src / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    base, later = tmp_path / "base", tmp_path / "later"
    cut = Path(user_cut("prepare", str(src), base, 4))
    assert cut == base / "data" / "toy-u4"
    assert len({line.split("\t")[0] for line in (cut / "toy.inter").read_text().splitlines()[1:]}) == 4
    assert user_cut("run", str(src), later, 4, base_from=base) == str(cut)  # the stage 1 it reuses was made on it
    with pytest.raises(SystemExit, match="prepare --max-users 4"):
        user_cut("run", str(src), later, 4)  # no cut in a fresh OUT: a clear error, not a run on a missing path
    peers = Path(user_cut("peer", str(src), tmp_path / "peers", 4))  # a peer's fresh OUT: the same users as prepare's
    assert (peers / "toy.inter").read_text() == (cut / "toy.inter").read_text()
    assert user_cut("peer", str(src), base, 4) == str(cut)  # an OUT with its cut: that one


def test_user_cut_of_a_unisrec_folder_keeps_the_same_users_in_every_split_file(tmp_path):
    """Games ships UniSRec's layout (one row per user in <name>.valid.inter and <name>.test.inter): the cut keeps
    both files' rows of the same users, and the loader rebuilds each kept user's whole sequence."""
    from bench.mechanisms import subsample_users
    from training.data import load_dataset

    src = tmp_path / "games"
    src.mkdir()
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    seqs = {f"{u}": [f"{(u + j) % 7}" for j in range(4)] for u in range(12)}
    (src / "g.valid.inter").write_text(header + "".join(f"{u}\t{' '.join(s[:2])}\t{s[2]}\n" for u, s in seqs.items()))
    (src / "g.test.inter").write_text(header + "".join(f"{u}\t{' '.join(s[:3])}\t{s[3]}\n" for u, s in seqs.items()))
    (src / "g.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tgame {i}\n" for i in range(7)))
    cut = Path(subsample_users(str(src), tmp_path / "out", 5))
    users_of = {name: [line.split("\t")[0] for line in (cut / name).read_text().splitlines()[1:]]
                for name in ("g.valid.inter", "g.test.inter")}
    assert len(users_of["g.test.inter"]) == 5 and users_of["g.valid.inter"] == users_of["g.test.inter"]
    data = load_dataset(cut)
    assert len(data.user_ids) == 5 and data.item_texts is not None
    assert all(len(seq) == 4 for seq in data.sequences)  # valid + test rows chain into the whole sequence


def test_a_dataset_without_text_gets_stage_1_from_the_base_runs_sasrec_and_runs_pause(tmp_path, monkeypatch):
    """prepare on a dataset with no item text writes no shared stage 1 (the base run takes its own SASRec's item
    table, as training.train does); run --pause-after reaches every training run, and paused runs exit 75."""
    import bench.mechanisms as mech
    from training.resume import PAUSED_EXIT

    src = tmp_path / "toy"
    src.mkdir()
    rows = [f"u{u}\ti{(u + i) % 12}\t{i}" for u in range(20) for i in range(6)]
    (src / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    mech.prepare(str(src), out, suite="converged")
    stage1 = out / "stage1-leave_one_out"
    assert not (stage1 / "item_embeddings.npy").exists() and mech.base_stage1(stage1) is None
    with pytest.raises(SystemExit, match="no stage 1 in .*: run `python -m bench.mechanisms prepare`"):
        mech.base_stage1(tmp_path / "missing")

    launched = []
    monkeypatch.setattr(mech, "_launch", lambda dataset, out, p, v, stage1, sasrec, budget, extra:
                        launched.append((v, stage1, list(extra))) or (f"{p}/{v}", None))
    monkeypatch.setattr(mech, "_wait", lambda procs: {name: PAUSED_EXIT for name, _ in procs})
    codes = mech.run(str(src), out, None, suite="converged", pause_after=600.0)
    assert launched == [("preset", None, ["train.pause_after=600.0"])]  # paused: the variants wait for the base
    assert codes == {"leave_one_out/preset": PAUSED_EXIT}
    assert mech.main(["run", "--suite", "converged", "--dataset", str(src), "--out", str(out),
                      "--pause-after", "600"]) == PAUSED_EXIT
    # a base run an earlier call finished is kept; the same command goes on with the variants
    (out / "leave_one_out" / "preset").mkdir(parents=True)
    (out / "leave_one_out" / "preset" / "metrics.json").write_text("{}")
    launched.clear()
    mech.run(str(src), out, None, suite="converged", pause_after=600.0)
    assert [v for v, _, _ in launched] == ["preset-ids-from-scratch"]
    launched.clear()
    mech.run(str(src), out, None, suite="converged")  # not pausing: every run trains afresh, as before
    assert [v for v, _, _ in launched] == ["preset"]
