"""Interest queries seeded by the user's recent tastes (hybrid.llm.query_seeds=recent_clusters): the batched
k-means groups hand-made tastes, the queries then differ per user, a stage-2 epoch trains, and the LLM still
exports to ONNX with parity."""
import dataclasses

import pytest
import torch

from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, TrainConfig
from training.hybrid import HybridRecommender
from training.llm_recommender import recent_clusters
from training.stage2 import train_hybrid

from tests.training.toy_stage2 import random_stage2_data


def _tastes():
    """One user, left-padded: [pad, a, b, 1.1a, 0.9b, 0.95a] with a ⟂ b; the newest item is in a's group."""
    a, b = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0, 0.0])
    emb = torch.stack([torch.zeros(4), a, b, 1.1 * a, 0.9 * b, 0.95 * a])[None]
    return a, b, emb, torch.tensor([[0.0, 1, 1, 1, 1, 1]])


def test_recent_clusters_groups_the_tastes_newest_first():
    a, b, emb, mask = _tastes()
    centres = recent_clusters(emb, mask, 2)
    assert centres.shape == (1, 2, 4)
    torch.testing.assert_close(centres[0, 0], a * (1 + 1.1 + 0.95) / 3)  # the newest item's group first
    torch.testing.assert_close(centres[0, 1], b * (1 + 0.9) / 2)


def test_recent_clusters_never_seeds_on_padding_and_repeats_when_items_run_out():
    a, _, emb, _ = _tastes()
    only_newest = torch.tensor([[0.0, 0, 0, 0, 0, 1]])
    centres = recent_clusters(emb, only_newest, 3)
    for k in range(3):  # one item: every centre is that item, none is the zero padding row
        torch.testing.assert_close(centres[0, k], 0.95 * a)


def _hybrid(query_seeds: str = "recent_clusters") -> HybridConfig:
    return HybridConfig(n_interests=3, window=6, recent_n=4, long_len=12, out_dim=8, n_negatives=-1,
                        item_tower_dropout=0.0, lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                        llm=LLMRecommenderConfig(hidden=16, intermediate=32, dropout=0.0, query_seeds=query_seeds))


def test_seeded_queries_follow_each_users_recent_items():
    torch.manual_seed(0)
    model = HybridRecommender(_hybrid(), 4, 10)
    model.eval()
    _, _, emb, mask = _tastes()
    coarse = torch.zeros(2, model.config.lightweight.n_coarse, model.llm.hidden)
    # the second user: the same items, in an order that puts b's group newest
    both = torch.cat([emb, emb[:, [0, 1, 3, 2, 5, 4]]])
    both_mask = torch.cat([mask, mask])
    with torch.no_grad():
        interests = model.llm(coarse, both, both_mask)
        learned = dataclasses.replace(model.llm.config, query_seeds="learned")
        model.llm.config = learned
        plain = model.llm(coarse, both, both_mask)
    # seeded: the first interest follows the newest taste, so it differs between the users more than unseeded
    seeded_gap = (interests[0, 0] - interests[1, 0]).norm()
    plain_gap = (plain[0, 0] - plain[1, 0]).norm()
    assert seeded_gap > plain_gap


def test_a_seeded_model_trains_every_query():
    sequences, valid, tables = random_stage2_data(n_users=40, n_items=30, item_dim=8, lengths=(8, 16), n_valid=20)
    torch.manual_seed(0)
    hybrid = _hybrid()
    model = HybridRecommender(hybrid, 8, 30)
    before = model.llm.interest_queries.detach().clone()
    history = train_hybrid(model, tables, sequences, valid, hybrid, TrainConfig(epochs=1, batch_size=8, lr=1e-2),
                           progress=False, log=lambda *_: None)
    assert torch.isfinite(torch.tensor(history["epochs"][0]["loss"]))
    assert ((model.llm.interest_queries.detach() - before).norm(dim=-1) > 0).all()


def test_seeded_llm_exports_to_onnx_with_parity(tmp_path):
    from training.export.onnx_export import export_llm

    torch.manual_seed(0)
    model = HybridRecommender(dataclasses.replace(_hybrid(), lightweight=LightweightConfig(n_coarse=2, model_dim=16)),
                              8, 20).eval()
    report = export_llm(model.llm, tmp_path / "llm.onnx", n_coarse=2, n_cases=30)
    assert report.n_cases >= 30 and report.max_abs_diff <= 1e-4


def test_unknown_query_seeds_are_refused_by_name():
    with pytest.raises(ValueError, match="query_seeds"):
        HybridRecommender(_hybrid(query_seeds="random"), 8, 20)
