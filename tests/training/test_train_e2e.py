"""A short real end-to-end training run on synthetic data: stage 1 (MiniLM fine-tune), codebook,
stage 2 (hybrid + DMIL); its test metrics must beat popularity and its artifacts must load."""
import json

import numpy as np
import pytest

from features.artifacts import RunLayout
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
