"""Stage 2 on strided cuts (hybrid.train_stride): SASRec's every-prefix training instances for HyMiRec; and its
batches of similar long-history lengths (train.length_buckets), which make those many instances affordable."""
import numpy as np
import pytest
import torch

from training.batches import batch_indices, long_lengths, model_inputs, strided_cuts, train_batch
from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, TrainConfig
from training.dmil import next_item_loss
from training.hybrid import HybridRecommender
from training.stage2 import train_hybrid

from tests.training.toy_stage2 import random_stage2_data


def _labelled(sequences, cuts, recent_n: int, stride: int) -> list[list[int]]:
    """The items each sequence's cuts label under the dense loss on the last ``stride`` recent positions."""
    labels = [[] for _ in sequences]
    batch = train_batch(sequences, cuts, long_len=4, recent_n=recent_n, window=3)
    next_ids = np.concatenate([batch.recent_ids[:, 1:], batch.target_ids[:, :1]], 1)
    valid = (batch.recent_ids > 0) & (next_ids > 0)
    valid[:, :recent_n - stride] = False
    for row, (index, _) in enumerate(cuts):
        labels[index] += next_ids[row][valid[row]].tolist()
    return labels


@pytest.mark.parametrize("stride", [1, 3, 5])
def test_every_item_but_the_first_is_a_label_exactly_once_an_epoch(stride):
    sequences = [np.arange(1, 12), np.arange(20, 22), np.arange(30, 31), np.arange(40, 47)]
    cuts = strided_cuts(sequences, stride)
    assert (0, 10) in cuts and (1, 1) in cuts and not any(i == 2 for i, _ in cuts)  # one item: nothing to predict
    labels = _labelled(sequences, cuts, recent_n=5, stride=stride)
    for seq, got in zip(sequences, labels):
        assert sorted(got) == seq[1:].tolist()


def test_stride_one_cuts_every_prefix():
    assert strided_cuts([np.arange(1, 6)], 1) == [(0, 4), (0, 3), (0, 2), (0, 1)]
    with pytest.raises(ValueError, match="stride"):
        strided_cuts([np.arange(1, 6)], 0)


def test_the_loss_on_the_last_positions_ignores_the_earlier_ones():
    torch.manual_seed(0)
    catalogue = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    recent_ids, first = torch.tensor([[1, 2, 3, 4]]), torch.tensor([5])
    states = torch.randn(1, 4, 4)
    scale = torch.tensor(float(np.log(10.0)))
    changed = states.clone()
    changed[0, :2] = torch.randn(2, 4)  # positions 0 and 1 are not among the last 2
    assert torch.allclose(next_item_loss(states, recent_ids, first, catalogue, scale, last=2),
                          next_item_loss(changed, recent_ids, first, catalogue, scale, last=2))
    assert not torch.allclose(next_item_loss(states, recent_ids, first, catalogue, scale),
                              next_item_loss(changed, recent_ids, first, catalogue, scale))
    # last = 2 is the mean over positions 2 and 3 alone
    alone = next_item_loss(states[:, 2:], recent_ids[:, 2:], first, catalogue, scale)
    assert torch.allclose(next_item_loss(states, recent_ids, first, catalogue, scale, last=2), alone)


def _hybrid(stride: int) -> HybridConfig:
    return HybridConfig(n_interests=1, window=2, recent_n=4, long_len=12, out_dim=8, n_negatives=-1,
                        next_item_weight=1.0, anchor_last_item=True, train_stride=stride,
                        lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                        llm=LLMRecommenderConfig(hidden=16, intermediate=32, dropout=0.0))


def test_stage2_trains_on_strided_cuts_and_refuses_a_stride_past_the_recent_window():
    sequences, valid, tables = random_stage2_data(n_users=30, n_items=30, item_dim=8, lengths=(6, 15), n_valid=10)
    train = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, length_buckets=2)
    model = HybridRecommender(_hybrid(2), 8, 30)
    before = [p.detach().clone() for p in model.parameters()]
    history = train_hybrid(model, tables, sequences, valid, _hybrid(2), train, progress=False, log=lambda *_: None)
    assert len(history["epochs"]) == 2 and np.isfinite(history["epochs"][0]["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="train_stride"):
        train_hybrid(HybridRecommender(_hybrid(5), 8, 30), tables, sequences, valid, _hybrid(5), train,
                     progress=False, log=lambda *_: None)


def test_long_lengths_are_the_widths_the_batches_pad_to():
    sequences = [np.arange(1, 40), np.arange(1, 8)]
    samples = [(0, 38), (0, 20), (0, 5), (1, 6)]
    for mode in ("all", "older"):
        lengths = long_lengths(samples, long_len=16, recent_n=4, long_window_mode=mode)
        for (index, cut), length in zip(samples, lengths):
            inputs = model_inputs([sequences[index][:cut]], 16, 4, mode)
            assert int((inputs.long_ids > 0).sum()) == length
    assert long_lengths(samples, 16, 4, "older").tolist() == [16, 16, 1, 2]


def test_length_buckets_keep_every_sample_once_and_cut_the_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 512, size=1000)
    plain = batch_indices(lengths, 64, 0, np.random.default_rng(1))
    # buckets 0 is the one shuffled order it always was (runs before the setting train as they did)
    assert np.array_equal(np.concatenate(plain), np.random.default_rng(1).permutation(1000))
    bucketed = batch_indices(lengths, 64, 5, np.random.default_rng(1))
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    assert max(len(b) for b in bucketed) == 64

    def padded(batches):  # what the long branch computes: every row padded to its batch's longest
        return sum(len(b) * int(lengths[b].max()) for b in batches)

    assert padded(bucketed) < 0.7 * padded(plain)
