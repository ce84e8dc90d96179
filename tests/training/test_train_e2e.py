"""A short real end-to-end training run on synthetic data: stage 1 (MiniLM fine-tune), codebook,
stage 2 (hybrid + DMIL); its test metrics must beat popularity and its artifacts must load."""
import json

import numpy as np
import pytest

from core.artifacts import RunLayout
from features.codebook import ResidualCodebook
from training.config import RunConfig
from training.train import load_hybrid, run_training


@pytest.mark.slow
def test_short_training_run_beats_popularity(tmp_path):
    config = RunConfig(dataset="synthetic", run_dir=str(tmp_path / "run"), train_sasrec=False)
    config.item_encoder.finetune_steps = 5
    config.train.epochs = 3
    config.hybrid.long_len = 100
    metrics = run_training(config, progress=False, log=lambda *_: None)

    pop, ours = metrics["popularity"]["test"], metrics["hymirec"]["test"]
    assert ours["NDCG@10"] > pop["NDCG@10"] and ours["Recall@50"] > pop["Recall@50"], (ours, pop)
    assert metrics["item_representation"]["kind"] == "content_encoder"
    assert metrics["codebook"]["cos_mean_codes"] > 0.9

    layout = RunLayout.at(config.run_dir)
    n_items = len(json.loads(layout.item_ids.read_text())) - 1
    codes = np.load(layout.item_codes)
    codebook = ResidualCodebook.load(layout.codebook)
    assert codes.shape == (n_items + 1, config.codebook.n_layers)
    emb = np.load(layout.item_embeddings)
    assert np.array_equal(codebook.encode(emb[1:]), codes[1:])  # stored codes = re-encoding, no refit
    vectors = np.load(layout.item_vectors)
    assert vectors.shape == (n_items + 1, config.hybrid.out_dim)
    model = load_hybrid(config.run_dir)
    assert model.config.n_interests == config.hybrid.n_interests
    assert json.loads(layout.metrics.read_text())["hymirec"]["test"] == ours
    # the quality bench's inputs: test top-100 lists in test-user order (no SASRec list: it was not trained)
    users = np.load(layout.test_users)
    assert len(users) == ours["users"] and not layout.topk_test_sasrec.exists()
    for path in (layout.topk_test_popularity, layout.topk_test_hymirec):
        assert np.load(path).shape == (len(users), 100)

    # An ablation reuses this run's stage 1 (checked to be the same dataset / encoder / seed) and differs
    # only in stage 2: here the no-LLM recommender.
    ablation = RunConfig.from_dict({**config.to_dict(), "run_dir": str(tmp_path / "no-llm"),
                                    "stage1_from": config.run_dir}).override(["hybrid.use_llm=false", "train.epochs=1"])
    abl = run_training(ablation, progress=False, log=lambda *_: None)
    assert np.array_equal(np.load(RunLayout.at(ablation.run_dir).item_embeddings), emb)
    assert abl["item_representation"]["reused_from"] == config.run_dir
    assert abl["hymirec"]["test"]["users"] == ours["users"]
    other_seed = RunConfig.from_dict({**ablation.to_dict(), "run_dir": str(tmp_path / "bad")}).override(["train.seed=7"])
    with pytest.raises(ValueError, match="train.seed"):
        run_training(other_seed, progress=False, log=lambda *_: None)


@pytest.mark.slow
def test_id_tables_start_from_the_runs_own_sasrec(tmp_path):
    config = RunConfig(dataset="synthetic", run_dir=str(tmp_path / "run")).override([
        "item_encoder.finetune_steps=2", "train.epochs=1", "train.sasrec_epochs=1", "hybrid.long_len=50",
        "hybrid.item_id_residual=true", "hybrid.recent_id_embedding=true", "hybrid.recent_id_dim=64",
        "hybrid.id_init=sasrec"])
    logs = []
    metrics = run_training(config, progress=False, log=logs.append)
    assert any("item_tower.id_residual, recent_id start from SASRec" in line for line in logs), logs
    assert metrics["hymirec"]["test"]["users"] == metrics["sasrec"]["test"]["users"] > 0
    model = load_hybrid(config.run_dir)
    assert tuple(model.recent_id.weight.shape) == (metrics["dataset"]["items"] + 1, 64)
    # an ablation trains no SASRec of its own: it takes the one of the run it reuses stage 1 from
    ablation = RunConfig.from_dict({**config.to_dict(), "train_sasrec": False, "run_dir": str(tmp_path / "abl"),
                                    "stage1_from": config.run_dir})
    assert run_training(ablation, progress=False, log=lambda *_: None)["id_init"]["run"] == config.run_dir
    without_sasrec = RunConfig.from_dict({**ablation.to_dict(), "stage1_from": None})
    with pytest.raises(ValueError, match="id_init=sasrec needs a trained SASRec"):
        run_training(without_sasrec, progress=False, log=lambda *_: None)
