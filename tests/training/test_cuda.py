"""Stage 2 on CUDA (bf16 autocast in training, fp32 in scoring). Runs only where a GPU is; CI has none, so it
skips there. The full-size check (a whole Beauty run on an H200) is tools/gpu_check.sh, in BENCHMARKS.md."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, TrainConfig
from training.hybrid import HybridRecommender
from training.stage2 import ItemTables, predict_interests, train_hybrid

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

N_ITEMS, ITEM_DIM = 40, 8


def test_stage2_trains_on_cuda_and_scores_like_its_cpu_copy():
    rng = np.random.default_rng(0)
    # Users who walk the catalogue in steps of one: a pattern a few epochs can learn.
    sequences = [(np.arange(int(rng.integers(8, 16))) + int(rng.integers(0, N_ITEMS))) % N_ITEMS + 1
                 for _ in range(64)]
    valid = SimpleNamespace(histories=[s[:-1] for s in sequences[:32]],
                            targets=np.array([s[-1] for s in sequences[:32]]))
    exact = torch.randn(N_ITEMS + 1, ITEM_DIM, generator=torch.Generator().manual_seed(0))
    exact[0] = 0
    hybrid = HybridConfig(n_interests=2, window=2, recent_n=4, long_len=12, out_dim=8, n_negatives=-1, item_tower_dropout=0.0,
                          lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                          llm=LLMRecommenderConfig(hidden=16, intermediate=32, dropout=0.0))
    cuda_tables = ItemTables(exact=exact.cuda(), long=exact.cuda())
    torch.manual_seed(0)
    model = HybridRecommender(hybrid, ITEM_DIM, N_ITEMS).cuda()
    train = TrainConfig(epochs=4, batch_size=16, lr=1e-2, seed=0, patience=10)
    history = train_hybrid(model, cuda_tables, sequences, valid, hybrid, train, progress=False, log=lambda *_: None)

    losses = [epoch["loss"] for epoch in history["epochs"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert all(p.device.type == "cuda" for p in model.parameters())
    # Scoring is fp32 on both devices: the same weights give the same interests on the CPU.
    on_gpu = predict_interests(model, cuda_tables, valid.histories, batch=8)
    on_cpu = predict_interests(copy.deepcopy(model).cpu(), ItemTables(exact=exact, long=exact), valid.histories, 8)
    assert on_gpu.shape == (32, 2, 8)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)
