"""run_training's test top-K lists: same metrics as the evaluator paths, the protocol's masking, chunking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from peer_support import tiny_data_and_split

from training.evaluate import evaluate_rankings, topk_from_interests, topk_from_scores
from training.sasrec import SASRec, SASRecConfig, evaluate_sasrec
from training.evaluate import hybrid_test, sasrec_test


def test_sasrec_lists_and_metrics_in_chunks(tmp_path):
    data, split = tiny_data_and_split(tmp_path)
    torch.manual_seed(0)
    model = SASRec(data.n_items, SASRecConfig(dim=16, n_layers=1, max_len=20)).eval()
    metrics, topk, seconds = sasrec_test(model, split.test, k=12, chunk=7)  # several chunks
    assert metrics == pytest.approx(evaluate_sasrec(model, split.test))
    full = topk_from_scores(model.score(split.test.histories), split.test.histories, 12)
    assert np.array_equal(topk, full) and topk.shape == (len(split.test), 12) and seconds > 0
    for row, history in zip(topk, split.test.histories):
        assert not np.isin(row, history).any() and 0 not in row  # the whole history masked, no padding
    # the evaluator's rule: a target the user consumed before stays rankable, and the lists score as its metrics
    _, rankable, _ = sasrec_test(model, split.test, k=50, chunk=7, rankable_targets=True)
    assert np.array_equal(rankable, topk_from_scores(model.score(split.test.histories), split.test.histories, 50,
                                                     split.test.targets))
    assert evaluate_rankings(rankable, split.test.targets)["NDCG@10"] == pytest.approx(metrics["NDCG@10"])


def test_hybrid_lists_and_metrics(tmp_path):
    from training.config import HybridConfig
    from training.hybrid import HybridRecommender
    from training.stage2 import ItemTables, evaluate_hybrid, predict_interests

    data, split = tiny_data_and_split(tmp_path)
    torch.manual_seed(0)
    emb = torch.randn(data.n_items + 1, 16)
    emb[0] = 0
    tables = ItemTables(exact=emb, long=emb)
    model = HybridRecommender(HybridConfig(long_len=20, recent_n=5), 16, data.n_items).eval()
    metrics, topk, seconds = hybrid_test(model, tables, split.test, batch=8, k=12)
    assert metrics == pytest.approx(evaluate_hybrid(model, tables, split.test, 8))
    interests = predict_interests(model, tables, split.test.histories, 8)
    vectors = model.item_vectors(emb).float().numpy()
    assert np.array_equal(topk, topk_from_interests(interests, vectors, split.test.histories, 12))
    for row, history in zip(topk, split.test.histories):
        assert not np.isin(row[row > 0], history).any()
    assert evaluate_rankings(topk, split.test.targets)["users"] == len(split.test) and seconds > 0
