"""bench/heldout_users.py scores a finished user-cut run on the users outside its cut: the mapping into the run's
item index drops only what the run never saw, and scoring users identical to the run's own test users through it
reproduces the run's own test metrics (same model, tables, protocol and serving path)."""
import dataclasses

import numpy as np
import pytest

from bench.heldout_users import heldout_record, heldout_users, main, parse_model, score_heldout
from training.config import RunConfig
from training.datasets.base import InteractionData
from training.protocols import make_split
from training.train import load_run_data, run_training

from tests.training.test_multi_interest import SMALL


def _data(users: dict[str, list[str]], items: list[str]) -> InteractionData:
    index = {raw: i for i, raw in enumerate(items)}
    sequences = [np.array([index[i] for i in seq], np.int64) for seq in users.values()]
    return InteractionData(name="toy", sequences=sequences,
                           timestamps=None, user_ids=list(users), item_ids=items, item_texts=None)


def test_heldout_users_are_the_unseen_ones_mapped_into_the_runs_items():
    full = _data({"u1": ["a", "b", "c"], "u2": ["c", "x", "a", "b"], "u3": ["b", "b", "x"]},
                 ["<pad>", "a", "b", "c", "x"])
    held = heldout_users(full, seen_user_ids={"u1"}, run_item_ids=["<pad>", "c", "a", "b"],  # the run lacks "x"
                         max_dropped_share=0.5)
    assert held.data.user_ids == ["u2", "u3"]
    assert [s.tolist() for s in held.data.sequences] == [[1, 2, 3], [3, 3]]  # "x" dropped, order kept
    assert (held.users, held.items_dropped, held.interactions) == (2, 2, 7)
    assert held.data.item_ids == ["<pad>", "c", "a", "b"]


def test_heldout_users_refuse_a_cut_that_holds_everyone_and_a_bad_item_index():
    full = _data({"u1": ["a", "b", "a"]}, ["<pad>", "a", "b"])
    with pytest.raises(ValueError, match="nobody is held out"):
        heldout_users(full, {"u1"}, ["<pad>", "a", "b"])
    with pytest.raises(ValueError, match="<pad>"):
        heldout_users(full, set(), ["a", "b"])


def test_heldout_users_refuse_a_run_cut_from_another_dataset():
    full = _data({"u1": ["a", "b", "a"], "u2": ["b", "a", "b"]}, ["<pad>", "a", "b"])
    with pytest.raises(ValueError, match="1 of the run's 2 users are not in 'toy'.*'u9'"):
        heldout_users(full, {"u1", "u9"}, ["<pad>", "a", "b"])
    with pytest.raises(ValueError, match="66.7 % of the held-out interactions are items the run never saw"):
        heldout_users(full, {"u1"}, ["<pad>", "a", "z"])


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["leave_one_out", "window"])
def test_scoring_the_runs_own_users_as_held_out_reproduces_its_own_test(tmp_path, protocol):
    run_dir = tmp_path / protocol / "k1"
    config = RunConfig(dataset="synthetic", run_dir=str(run_dir), train_sasrec=True).override(
        SMALL + [f"train.protocol={protocol}", "hybrid.n_interests=1", "train.epochs=1", "train.sasrec_epochs=2"])
    metrics = run_training(config, progress=False, log=lambda *_: None)
    own, own_sasrec = metrics["hymirec"]["test"], metrics["sasrec"]["test"]
    same = load_run_data("synthetic")
    with pytest.raises(ValueError, match="nobody is held out"):
        score_heldout(run_dir, same)
    # the dataset plus a copy of every user under another name: the copies are held out, and are the run's own users
    doubled = dataclasses.replace(same, sequences=same.sequences * 2, timestamps=None,
                                  user_ids=same.user_ids + [f"copy-{u}" for u in same.user_ids])
    scored = score_heldout(run_dir, doubled)
    own_users = len(make_split(same, protocol, config.train.eval_window).test)
    assert scored["users"] == len(scored["per_user"]) == own_users
    assert scored["items_dropped"] == 0
    key = "Recall@50" if protocol == "window" else "NDCG@10"
    # 1e-5: with one torch thread the two passes sum in another order, and a near-tie can swap two items
    assert scored["metrics"][key] == pytest.approx(own[key], abs=1e-5)
    assert scored["per_user"].mean() == pytest.approx(own[key], abs=1e-5)
    sasrec = score_heldout(run_dir, doubled, "sasrec")  # the run's SASRec baseline, through the same mapping
    assert sasrec["per_user"].mean() == pytest.approx(own_sasrec[key], abs=1e-5)
    assert sasrec["metrics"][key] == pytest.approx(own_sasrec[key], abs=1e-5)
    (run_dir / "sasrec.pt").unlink()
    with pytest.raises(FileNotFoundError, match="no sasrec.pt"):
        score_heldout(run_dir, doubled, "sasrec")


def test_a_compared_model_is_a_run_or_the_sasrec_it_trained():
    assert parse_model("preset") == ("preset", "hymirec")
    assert parse_model("preset:sasrec") == ("preset", "sasrec")
    with pytest.raises(ValueError, match="expected RUN or RUN:sasrec"):
        parse_model("preset:bert4rec")


def _result(a: str, b: str, protocol: str, gain: float) -> dict:
    key = "Recall@50" if protocol == "window" else "NDCG@10"
    runs = {name: {"heldout": {key: score}, "own_test": {key: score + 0.01}, "valid_best": score + 0.02, "epochs": 9}
            for name, score in ((a, 0.3 * (1 + gain)), (b, 0.3))}
    return {"dataset": "../shared/data/ml-1m", "protocol": protocol, "a": a, "b": b, "runs": runs,
            "metric": "window Recall@50" if protocol == "window" else "leave-one-out NDCG@10",
            "heldout_users": 5040, "interactions": 1000, "interactions_dropped": 5,
            "reading": f"{100 * gain:+.1f} % (95 % CI ...)", "own_test_reading": "-9.7 % (95 % CI ...)"}


def test_the_record_shows_each_comparison_held_out_beside_the_runs_own_test():
    replicate = _result("k1", "k1-exact", "window", 0.01) | {"seed": 1}
    results = [_result("preset", "recent", "leave_one_out", 0.036), _result("k1", "k1-exact", "window", 0), replicate]
    record = heldout_record(results, "make bench-mechanisms", "machine", "2026-12-06")
    assert record["area"].startswith("Mechanisms") and "ml-1m" in record["area"]
    assert [row[0] for row in record["rows"]] == ["preset vs recent", "codes vs exact embeddings (K=1): k1 vs k1-exact",
                                                  "codes vs exact embeddings (K=1): k1 vs k1-exact, seed 1"]
    assert "codes vs exact embeddings (K=1) (seed 1), window Recall@50: +1.0 %" in record["reading"]
    assert record["reading"].startswith("preset vs recent, leave-one-out NDCG@10: +3.6 %")
    assert "codes vs exact embeddings (K=1), window Recall@50: +0.0 %" in record["reading"]
    first = dict(zip(record["columns"], record["rows"][0]))
    assert first["a held-out"] == "0.3108" and first["b held-out"] == "0.3000" and first["held-out users"] == "5,040"
    assert first["gain, held-out"] == "+3.6 % (95 % CI ...)" and first["gain, own test"].startswith("-9.7")
    assert first["a / b valid"] == "0.3308 / 0.3200"
    assert "0.50 % of their interactions" in record["setup"]  # 15 of 3,000
    with pytest.raises(ValueError, match="no held-out comparisons"):
        heldout_record([], "c", "m", "d")


def test_the_record_names_the_settings_of_a_compared_sasrec():
    plain = _result("preset", "recent", "leave_one_out", 0.036)
    versus = _result("preset", "preset:sasrec", "leave_one_out", 0.185) | {"out": "runs/mech1m-longloo"}
    versus["runs"]["preset:sasrec"]["settings"] = "dropout 0.2, lr 0.001, batch 128"
    record = heldout_record([plain, versus], "make bench-mechanisms", "machine", "2026-12-06")
    assert "RUN:sasrec" not in heldout_record([plain], "c", "m", "d")["setup"]
    assert "settings: preset:sasrec of mech1m-longloo: dropout 0.2, lr 0.001, batch 128)" in record["setup"]
    assert record["rows"][1][0] == "HyMiRec preset vs the SASRec it started from (same run): preset vs preset:sasrec"
    tuned = versus | {"out": "runs/conv1m-fullrb"}
    both = heldout_record([versus, tuned], "c", "m", "d")  # one pair from two folders: each row names its folder
    assert [row[0].rsplit(" (", 1)[1] for row in both["rows"]] == ["mech1m-longloo)", "conv1m-fullrb)"]
    assert "(same run) (conv1m-fullrb), leave-one-out NDCG@10" in both["reading"]


def test_compare_names_the_flags_it_lacks(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "synthetic"])
    assert "--out, --protocol, --a, --b" in capsys.readouterr().err
