"""bench/step_curves.py: stage-2 validation read from train.log and put on an optimiser-step axis."""
import numpy as np
import pytest

from bench.step_curves import samples_per_epoch, step_windows, valid_curve
from training.batches import strided_cuts, window_samples
from training.config import HybridConfig, TrainConfig

LOG = """[stage 2] item_tower.id_residual start from SASRec's item embeddings (this run)
[hybrid] epoch 1: loss 7.0 valid NDCG@10 0.0800 Recall@10 0.16 query share [1.0] inter-query cos 1.000 (48s)
[hybrid] epoch 2: loss 6.5 valid NDCG@10 0.1000 Recall@10 0.19 query share [1.0] inter-query cos 1.000 (54s)
[hybrid] resumed after epoch 2 (best valid 0.1000)
[hybrid] epoch 3: loss 6.2 valid NDCG@10 0.1200 Recall@10 0.21 query share [1.0] inter-query cos 1.000 (64s)
"""


def test_the_curve_is_read_from_the_epoch_lines_in_order():
    assert valid_curve(LOG) == [0.08, 0.10, 0.12]
    with pytest.raises(ValueError, match="not 1..n"):
        valid_curve(LOG.replace("epoch 2:", "epoch 5:"))


def test_windows_average_the_epochs_that_end_inside_them():
    # epochs end at steps 30, 60, 90, 120: (0, 60] holds the first two, (60, 100] the third, (100, 200] the fourth
    assert step_windows([0.1, 0.2, 0.3, 0.5], 30, [0, 60, 100, 200, 300]) == pytest.approx([0.15, 0.3, 0.5, None])


def test_samples_per_epoch_counts_what_stage2_draws():
    rng = np.random.default_rng(0)
    sequences = [np.arange(1, n + 1) for n in rng.integers(2, 300, size=40)]
    random_cuts = HybridConfig(recent_n=50, window=3, next_item_weight=1.0)
    train = TrainConfig()
    drawn = window_samples(sequences, 3, train.samples_per_user, np.random.default_rng(7), stride=50)
    assert samples_per_epoch(sequences, random_cuts, train) == len(drawn)
    strided = HybridConfig(recent_n=50, window=3, next_item_weight=1.0, train_stride=5)
    assert samples_per_epoch(sequences, strided, train) == len(strided_cuts(sequences, 5))
    assert samples_per_epoch(sequences, strided, train) == sum((len(s) - 1 + 4) // 5 for s in sequences)
