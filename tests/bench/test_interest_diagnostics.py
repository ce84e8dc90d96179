"""bench/interest_diagnostics.py re-scores a trained window run through its own model, tables, labels and test
users: with K = 1 the "mean interest" and "one interest alone" rows must reproduce the run's own test metrics."""
import json

import pytest

from bench.interest_diagnostics import diagnose
from training.config import RunConfig
from training.train import run_training

from tests.training.test_multi_interest import SMALL


@pytest.mark.slow
def test_k1_diagnostics_reproduce_the_runs_own_test_metrics(tmp_path):
    run_dir = tmp_path / "window" / "k1"
    config = RunConfig(dataset="synthetic", run_dir=str(run_dir), train_sasrec=False).override(
        SMALL + ["train.protocol=window", "hybrid.n_interests=1", "train.epochs=1"])
    own = run_training(config, progress=False, log=lambda *_: None)["hymirec"]["test"]
    diagnose(tmp_path, ["k1"])
    result = json.loads((run_dir / "interest_diagnostics.json").read_text())
    assert set(result) == {"mean interest", "one interest alone, mean of 1"}
    for metrics in result.values():
        for key in ("Recall@50", "NDCG@50", "Coverage@50", "ILD@50"):
            assert metrics[key] == pytest.approx(own[key], abs=1e-6), key
