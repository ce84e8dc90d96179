"""Stage 2's weight averaging (train.ema_decay): the averaged weights are the ones validated and kept."""
import pytest
import torch

from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, TrainConfig
from training.hybrid import HybridRecommender
from training.stage2 import evaluate_hybrid, train_hybrid

from tests.training.toy_stage2 import random_stage2_data

N_ITEMS, ITEM_DIM = 30, 8


def _setup():
    sequences, valid, tables = random_stage2_data(n_users=40, n_items=N_ITEMS, item_dim=ITEM_DIM, lengths=(6, 15),
                                                  n_valid=20)
    hybrid = HybridConfig(n_interests=2, window=2, recent_n=4, long_len=12, out_dim=8, n_negatives=-1,
                          item_tower_dropout=0.0,
                          lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                          llm=LLMRecommenderConfig(hidden=16, intermediate=32, dropout=0.0))
    return sequences, valid, tables, hybrid


def _train(ema_decay: float):
    sequences, valid, tables, hybrid = _setup()
    torch.manual_seed(0)
    model = HybridRecommender(hybrid, ITEM_DIM, N_ITEMS)
    train = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, ema_decay=ema_decay)
    history = train_hybrid(model, tables, sequences, valid, hybrid, train, progress=False, log=lambda *_: None)
    return model, history, tables, valid


def test_the_kept_weights_are_the_validated_average_not_the_raw_weights():
    raw, _, _, _ = _train(0.0)
    averaged, history, tables, valid = _train(0.9)
    # Same seed, same batches: only the averaging differs, so the kept weights must differ ...
    assert any(not torch.allclose(a, b) for a, b in zip(raw.state_dict().values(), averaged.state_dict().values()))
    # ... and what was kept scores exactly what the epoch's validation logged.
    again = evaluate_hybrid(averaged, tables, valid)
    assert again["NDCG@10"] == pytest.approx(history["epochs"][0]["valid"]["NDCG@10"], abs=1e-6)


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        _train(decay)
