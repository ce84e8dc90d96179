"""How the window targets train the K interest queries (hybrid.interest_routing, holistic_interest,
max_merge_weight): each option trains through stage 2, and bad settings are refused by name."""
import dataclasses

import pytest
import torch

from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, TrainConfig
from training.hybrid import HybridRecommender
from training.stage2 import train_hybrid

from tests.training.toy_stage2 import random_stage2_data

N_ITEMS, ITEM_DIM = 30, 8


def _hybrid(**changes) -> HybridConfig:
    base = HybridConfig(n_interests=3, window=6, recent_n=4, long_len=12, out_dim=8, n_negatives=-1,
                        item_tower_dropout=0.0, lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                        llm=LLMRecommenderConfig(hidden=16, intermediate=32, dropout=0.0))
    return dataclasses.replace(base, **changes)


def _train(hybrid: HybridConfig):
    sequences, valid, tables = random_stage2_data(n_users=40, n_items=N_ITEMS, item_dim=ITEM_DIM, lengths=(8, 16),
                                                  n_valid=20)
    torch.manual_seed(0)
    model = HybridRecommender(hybrid, ITEM_DIM, N_ITEMS)
    before = model.llm.interest_queries.detach().clone()
    history = train_hybrid(model, tables, sequences, valid, hybrid, TrainConfig(epochs=1, batch_size=8, lr=1e-2),
                           progress=False, log=lambda *_: None)
    return model, before, history["epochs"][0]


@pytest.mark.parametrize("changes", [{"interest_routing": "nearest"}, {"holistic_interest": True},
                                     {"max_merge_weight": 1.0},
                                     {"max_merge_weight": 1.0, "dmil_weight": 0.0},
                                     {"max_merge_weight": 1.0, "dmil_weight": 0.0, "max_merge_softness": 0.05},
                                     {"holistic_interest": True, "residual_rank": 3, "interest_routing": "nearest"}],
                         ids=["nearest", "holistic", "max-merge", "max-merge-only", "soft-max-merge-only", "residual"])
def test_each_option_trains_every_query(changes):
    model, before, epoch = _train(_hybrid(**changes))
    assert torch.isfinite(torch.tensor(epoch["loss"]))
    moved = (model.llm.interest_queries.detach() - before).norm(dim=-1)
    assert (moved > 0).all(), moved  # every query got gradient (none starved by the routing)
    if changes.get("holistic_interest"):  # the routed shares are over the other K - 1 queries only
        assert len(epoch["query_share"]) == 2
    else:  # without routing, the shares say which interest wins each target: still one share per query
        assert len(epoch["query_share"]) == 3 and abs(sum(epoch["query_share"]) - 1) < 1e-3


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="interest_routing"):
        HybridRecommender(_hybrid(interest_routing="greedy"), ITEM_DIM, N_ITEMS)
    with pytest.raises(ValueError, match="holistic_interest"):
        HybridRecommender(_hybrid(holistic_interest=True, n_interests=1), ITEM_DIM, N_ITEMS)
    with pytest.raises(ValueError, match="dmil_weight=0 needs hybrid.max_merge_weight"):
        HybridRecommender(_hybrid(dmil_weight=0.0), ITEM_DIM, N_ITEMS)
    with pytest.raises(ValueError, match=">= 0"):
        HybridRecommender(_hybrid(max_merge_weight=-1.0), ITEM_DIM, N_ITEMS)
    with pytest.raises(ValueError, match="max_merge_softness"):
        HybridRecommender(_hybrid(max_merge_softness=-0.1), ITEM_DIM, N_ITEMS)
    with pytest.raises(ValueError, match="residual_rank"):  # whose misses? the first query is only set apart holistically
        HybridRecommender(_hybrid(residual_rank=50), ITEM_DIM, N_ITEMS)


def test_missed_targets_are_those_the_first_interest_ranks_low():
    from training.dmil import missed_targets

    first = torch.tensor([[1.0, 0.0]])  # one sample's first interest
    candidates = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])  # scores 1, .9, .5, 0
    targets = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])  # scores 1 (rank 0), .5 (2 above), 0 (3 above)
    assert missed_targets(first, targets, candidates, rank=2).tolist() == [[False, True, True]]
    assert missed_targets(first, targets, candidates, rank=3).tolist() == [[False, False, True]]
