"""run_peer end to end with the reference runner (main venv's python), failures, timeouts, the registry."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from peer_support import REFERENCE_RUNNER, tiny_data_and_split

from training.evaluate import evaluate_rankings, popularity_topk
from bench.peers.runner import (PEERS, Peer, PeerError, PeerPaused, parse_peers, peer_env, peer_python,
                                  peer_timeout, run_peer)
from bench.peers.split_export import export_split

REFERENCE = Peer("reference-popularity", "reference", "popularity", "Popularity (reference runner)")


@pytest.fixture()
def exported(tmp_path):
    data, split = tiny_data_and_split(tmp_path / "data")
    return data, split, export_split(data, split, tmp_path / "split")


def test_reference_runner_end_to_end_matches_our_popularity(exported, tmp_path):
    data, split, split_dir = exported
    lines = []
    run = run_peer(REFERENCE, split_dir, tmp_path / "out", epochs=1, time_budget=60, seed=0, topk=20,
                   python=sys.executable, runner=REFERENCE_RUNNER, log=lines.append)
    ours = popularity_topk(split.train, data.n_items, split.test.histories, 20)
    assert run.topk.shape == (len(split.test), 20) and run.topk.dtype == np.int64
    assert np.array_equal(run.topk, ours)
    assert evaluate_rankings(run.topk, split.test.targets) == evaluate_rankings(ours, split.test.targets)
    assert run.protocol_violations == 0 and run.duplicate_items == 0
    assert run.result["library"] == "reference" and run.result["n_test_users"] == len(split.test)
    assert (tmp_path / "out" / "run.log").read_text().startswith("[reference]")
    assert any("[reference-popularity] [reference]" in line for line in lines)  # progress echoed


@pytest.mark.skipif(not peer_python("recbole").exists(), reason="no .venv-peers/recbole (bench/peers/setup.sh recbole)")
def test_recbole_sine_trains_on_histories_shorter_than_max_len(exported, tmp_path):
    # RecBole's SINE reshapes to MAX_ITEM_LIST_LENGTH but RecBole pads only to the longest history: before the
    # runner padded them, a dataset whose histories never reach --max-len (amazon-games-2018) failed to train.
    _, split, split_dir = exported
    assert max(len(h) for h in split.test.histories) < 50
    run = run_peer("recbole-sine", split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0, dim=16,
                   max_len=50, topk=20, log=None)
    assert run.topk.shape == (len(split.test), 20) and run.protocol_violations == 0
    assert run.result["model"] == "SINE" and run.result["epochs_run"] == 1


def _with_venv(library: str, *models: str) -> list:
    skip = pytest.mark.skipif(not peer_python(library).exists(),
                              reason=f"no .venv-peers/{library} (bench/peers/setup.sh {library})")
    return [pytest.param(model, marks=skip) for model in models]


@pytest.mark.parametrize("model", _with_venv("recbole", "recbole-sasrec") + _with_venv(
    "rectools", "rectools-sasrec", "rectools-bert4rec") + _with_venv("rechub", "rechub-comirec-sa", "rechub-mind"))
def test_runner_paused_and_resumed_equals_an_uninterrupted_one(exported, tmp_path, model):
    # --pause-after 0 stops after every epoch with the runner's checkpoint (weights, optimizer, validation history,
    # best weights, every random generator): three calls make the three epochs of one run, to the same lists
    _, split, split_dir = exported
    saved = tmp_path / "sliced" / ("checkpoint.ckpt" if model.startswith("rectools") else "checkpoint.pt")
    kw = dict(epochs=3, time_budget=None, seed=0, dim=16, max_len=20, topk=20, patience=10, log=None)
    whole = run_peer(model, split_dir, tmp_path / "whole", **kw)
    for epoch in (1, 2):
        with pytest.raises(PeerPaused, match="the same command resumes"):
            run_peer(model, split_dir, tmp_path / "sliced", pause_after=0, **kw)
        assert saved.is_file()
    sliced = run_peer(model, split_dir, tmp_path / "sliced", pause_after=0, **kw)
    assert not saved.exists()  # finished: nothing left to resume
    assert sliced.result["params"]["resumed"] == 2 and whole.result["params"]["resumed"] == 0
    assert sliced.result["epochs_run"] == whole.result["epochs_run"] == 3

    def history(run):  # epoch by epoch: the loss where the runner reports it, validation NDCG@10
        return [{k: e[k] for k in ("epoch", "loss", "valid_ndcg10") if k in e} for e in run.result["epochs"]]

    assert history(sliced) == history(whole) and len(history(whole)) == 3
    assert np.array_equal(sliced.topk, whole.topk)
    assert (tmp_path / "sliced" / "run.log").read_text().count("resumed after epoch") == 2  # one log, appended
    if model.startswith("rechub"):  # the three calls' seconds, not the last one's
        assert sliced.result["train_seconds"] >= sum(e["seconds"] for e in sliced.result["epochs"])

    # a checkpoint made with another setting, or on another split, is refused by name, not silently continued
    with pytest.raises(PeerPaused):
        run_peer(model, split_dir, tmp_path / "other", pause_after=0, **kw)
    with pytest.raises(PeerError, match=r"dim \(16 vs 8\)"):
        run_peer(model, split_dir, tmp_path / "other", **{**kw, "dim": 8})
    train = Path(split_dir) / "train.tsv"
    train.write_text(train.read_text() + "0\t1\t999\n")
    with pytest.raises(PeerError, match="another split"):
        run_peer(model, split_dir, tmp_path / "other", **kw)


def test_paused_runner_keeps_its_log_and_says_how_to_resume(exported, tmp_path):
    _, _, split_dir = exported
    script = tmp_path / "pausing.py"
    script.write_text(textwrap.dedent("""
        import pathlib, sys
        assert sys.argv[sys.argv.index("--pause-after") + 1] == "5.0"
        pathlib.Path("checkpoint.pt").write_text("state")
        print("epoch 1 done", file=sys.stderr)
        sys.exit(75)
    """))
    for _ in range(2):
        with pytest.raises(PeerPaused, match=r"paused with a checkpoint in .*out; the same command resumes"):
            run_peer(REFERENCE, split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0, pause_after=5,
                     python=sys.executable, runner=script, log=None)
    assert (tmp_path / "out" / "run.log").read_text().count("epoch 1 done") == 2  # appended, not overwritten


def test_patience_reaches_the_runner_and_the_reference_runner_accepts_it(exported, tmp_path):
    # the converged view's runs (bench.mechanisms peer) ask every runner for the same patience rule
    _, split, split_dir = exported
    run = run_peer(REFERENCE, split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0, topk=20, patience=10,
                   python=sys.executable, runner=REFERENCE_RUNNER, log=None)
    assert run.topk.shape == (len(split.test), 20)
    script = tmp_path / "echo_args.py"
    script.write_text("import sys\nsys.exit(0 if sys.argv[sys.argv.index('--patience') + 1] == '7' else 3)\n")
    with pytest.raises(Exception, match="result.json: missing"):  # it got --patience 7, then wrote nothing
        run_peer(REFERENCE, split_dir, tmp_path / "echo", epochs=1, time_budget=None, seed=0, patience=7,
                 python=sys.executable, runner=script, log=None)


@pytest.mark.skipif(not peer_python("rectools").exists(),
                    reason="no .venv-peers/rectools (bench/peers/setup.sh rectools)")
@pytest.mark.parametrize("peer", ["rectools-sasrec", "rectools-bert4rec"])
def test_rectools_early_stops_on_validation_ndcg(exported, tmp_path, peer):
    _, split, split_dir = exported
    run = run_peer(peer, split_dir, tmp_path / "out", epochs=40, time_budget=None, seed=0, dim=16, max_len=20,
                   topk=20, patience=2, log=None)
    params, history = run.result["params"], run.result["epochs"]
    assert params["early_stopping"] == "valid NDCG@10" and len(history) == run.result["epochs_run"]
    best = max(history, key=lambda e: e["valid_ndcg10"])  # the first best epoch is the one kept
    assert params["best_epoch"] == best["epoch"] and params["best_valid_ndcg10"] == best["valid_ndcg10"]
    # it stopped two epochs past its best, or at the cap
    assert run.result["epochs_run"] in (params["best_epoch"] + 2, 40)
    assert run.topk.shape == (len(split.test), 20) and run.protocol_violations == 0


def test_failing_runner_reports_its_stderr_tail(exported, tmp_path):
    _, _, split_dir = exported
    bad = Peer("reference-bad", "reference", "no-such-model", "bad")
    with pytest.raises(PeerError, match=r"runner failed \(exit 2.*\n.*unknown model 'no-such-model'"):
        run_peer(bad, split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0,
                 python=sys.executable, runner=REFERENCE_RUNNER, log=None)


def test_runner_that_writes_nothing_is_a_clear_error(exported, tmp_path):
    _, _, split_dir = exported
    script = tmp_path / "silent.py"
    script.write_text("import os\nos.mkdir('saved')  # libraries that write next to themselves (RecBole)\n"
                      "print('trained, but forgot to write the outputs')\n")
    with pytest.raises(Exception, match="result.json: missing"):
        run_peer(REFERENCE, split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0,
                 python=sys.executable, runner=script, log=None)
    assert (tmp_path / "out" / "saved").is_dir()  # the runner ran inside its output folder


def test_hung_runner_is_killed_at_the_timeout(exported, tmp_path):
    _, _, split_dir = exported
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        print("about to hang", file=sys.stderr, flush=True)
        time.sleep(60)
    """))
    with pytest.raises(PeerError, match=r"timed out after 2s[\s\S]*about to hang"):
        run_peer(REFERENCE, split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0,
                 python=sys.executable, runner=script, timeout=2, log=None)


def test_missing_venv_python_is_a_clear_error(exported, tmp_path):
    _, _, split_dir = exported
    with pytest.raises(PeerError, match="no python at .*setup.sh reference"):
        run_peer(REFERENCE, split_dir, tmp_path / "out", epochs=1, time_budget=None, seed=0,
                 python=tmp_path / "nope" / "python", runner=REFERENCE_RUNNER, log=None)


def test_registry_and_peer_selection():
    assert len(PEERS) == 6
    assert PEERS["rectools-sasrec"].library == "rectools" and PEERS["rectools-sasrec"].model == "sasrec"
    assert {(p.library, p.model) for p in PEERS.values()} == {
        ("rectools", "sasrec"), ("rectools", "bert4rec"), ("recbole", "sasrec"), ("recbole", "sine"),
        ("rechub", "comirec_sa"), ("rechub", "mind")}
    assert parse_peers("all") == list(PEERS.values()) and parse_peers("none") == []
    assert [p.name for p in parse_peers("recbole,rectools-sasrec")] == ["recbole-sasrec", "recbole-sine",
                                                                      "rectools-sasrec"]
    with pytest.raises(ValueError, match="unknown peer 'lightfm'"):
        parse_peers("rectools,lightfm")


def test_peer_environment_and_timeout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/work/main")
    env = peer_env(seed=3, threads=2)
    assert "PYTHONPATH" not in env  # runners never import the project
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and env["PYTHONHASHSEED"] == "3"
    assert peer_timeout(600) == 3 * 600 + 1800 and peer_timeout(None) == 12 * 3600


def test_setup_script_all_succeeds_when_a_folder_is_not_a_library(tmp_path):
    # bench/peers/reference/ has no requirements.txt; `setup.sh all` used to exit 1 after installing every
    # library, because the loop's last `[ -f ... ] &&` test was false (and `make bench-quality` stopped there).
    root = Path(__file__).resolve().parents[2]
    peers = tmp_path / "bench" / "peers"
    (peers / "lib").mkdir(parents=True)
    (peers / "zz-not-a-library").mkdir()
    shutil.copy(root / "bench" / "peers" / "setup.sh", peers / "setup.sh")
    (peers / "lib" / "requirements.txt").write_text("numpy\n")
    # a stamp that matches: the script reports "up to date" instead of creating a venv (no network here)
    stamp = tmp_path / ".venv-peers" / "lib" / ".stamp-install"
    stamp.parent.mkdir(parents=True)
    digest = hashlib.sha256((peers / "lib" / "requirements.txt").read_bytes() + (peers / "setup.sh").read_bytes())
    stamp.write_text(digest.hexdigest() + "\n")
    done = subprocess.run(["bash", str(peers / "setup.sh"), "all"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout and "zz-not-a-library" not in done.stdout + done.stderr
    unknown = subprocess.run(["bash", str(peers / "setup.sh"), "zz-not-a-library"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown library 'zz-not-a-library'" in unknown.stderr
