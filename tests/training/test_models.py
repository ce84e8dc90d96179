"""Model shapes, padding invariance and long-history support (no training)."""
import numpy as np
import pytest
import torch

from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig
from training.hybrid import HybridRecommender
from training.lightweight import LightweightEncoder


def test_lightweight_handles_1024_items_and_ignores_left_padding():
    torch.manual_seed(0)
    model = LightweightEncoder(LightweightConfig(model_dim=32, n_coarse=4), item_dim=16, out_dim=24).eval()
    history = torch.randn(1, 1024, 16)
    out = model(history, torch.ones(1, 1024))
    assert out.shape == (1, 4, 24) and torch.isfinite(out).all()
    short = torch.randn(1, 7, 16)
    padded = torch.cat([torch.randn(1, 5, 16), short], 1)  # garbage in the padding must not matter
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 7)], 1)
    with torch.no_grad():
        assert torch.allclose(model(short, torch.ones(1, 7)), model(padded, mask), atol=1e-5)


def test_hybrid_outputs_k_unit_interests_and_is_padding_invariant():
    torch.manual_seed(0)
    cfg = HybridConfig(n_interests=3, out_dim=16,
                       lightweight=LightweightConfig(model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=50).eval()
    long_emb, recent_emb = torch.randn(2, 30, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        interests = model(long_emb, torch.ones(2, 30), recent_emb, torch.ones(2, 5))
        assert interests.shape == (2, 3, 16)
        assert torch.allclose(interests.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
        padded = model(torch.cat([torch.randn(2, 4, 8), long_emb], 1), torch.cat([torch.zeros(2, 4), torch.ones(2, 30)], 1),
                       torch.cat([torch.randn(2, 3, 8), recent_emb], 1), torch.cat([torch.zeros(2, 3), torch.ones(2, 5)], 1))
    assert torch.allclose(interests, padded, atol=1e-4)
    # The queries are distinct parameters, so the K interests differ.
    assert (interests[0] @ interests[0].T).triu(1).max() < 0.9999


def test_ablation_without_lightweight_and_single_interest():
    cfg = HybridConfig(n_interests=1, use_lightweight=False, out_dim=8,
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=10).eval()
    assert model.lightweight is None
    with torch.no_grad():
        out = model(torch.randn(3, 12, 8), torch.ones(3, 12), torch.randn(3, 4, 8), torch.ones(3, 4))
    assert out.shape == (3, 1, 8)
    vectors = model.item_vectors(torch.randn(11, 8))
    assert vectors.shape == (11, 8) and float(vectors[0].abs().sum()) == 0.0
    assert np.allclose(vectors[1:].norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_recent_id_embedding_starts_at_zero_and_is_baked_into_the_serving_table():
    torch.manual_seed(0)
    cfg = HybridConfig(recent_id_embedding=True, out_dim=8,
                       lightweight=LightweightConfig(model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=20).eval()
    exact = torch.randn(21, 8)
    ids = torch.tensor([[0, 3, 5]])
    assert torch.equal(model.recent_embeddings(exact, ids), exact[ids])  # zero-initialised
    with torch.no_grad():
        model.recent_id.weight[5] += 1.0
    table = model.recent_table(exact)
    assert torch.allclose(table[ids], model.recent_embeddings(exact, ids))
    assert torch.allclose(table[5], exact[5] + 1.0)


def test_recent_item_states_cannot_see_later_items_or_the_coarse_interests():
    """The dense next-item loss is only honest if the state after recent item j ignores items > j and the
    coarse interests (which summarise the whole history, later items included)."""
    torch.manual_seed(0)
    cfg = HybridConfig(n_interests=2, out_dim=8, item_tower_dropout=0.0,
                       lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64, dropout=0.0))
    model = HybridRecommender(cfg, item_dim=8, n_items=20).eval()
    long_emb, recent = torch.randn(1, 12, 8), torch.randn(1, 5, 8)
    ones_l, ones_r = torch.ones(1, 12), torch.ones(1, 5)
    with torch.no_grad():
        interests, states = model.forward_train(long_emb, ones_l, recent, ones_r)
        changed = recent.clone()
        changed[0, 3:] += 5.0  # change the last two recent items ...
        _, states_changed = model.forward_train(torch.randn(1, 12, 8), ones_l, changed, ones_r)  # ... and the long history
        interests_changed = model(long_emb, ones_l, changed, ones_r)
    assert states.shape == (1, 5, 8)
    with torch.no_grad():  # the inference path gives the same interests without the recent-state head
        assert torch.allclose(model(long_emb, ones_l, recent, ones_r), interests, atol=1e-6)
    assert torch.allclose(states[:, :3], states_changed[:, :3], atol=1e-5)  # earlier states unaffected
    assert not torch.allclose(states[:, 3:], states_changed[:, 3:], atol=1e-3)
    assert not torch.allclose(interests, interests_changed, atol=1e-3)  # the queries see everything


def test_ablation_without_llm_uses_the_coarse_interests_through_the_head():
    torch.manual_seed(0)
    cfg = HybridConfig(use_llm=False, out_dim=8, lightweight=LightweightConfig(n_coarse=4, model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=10).eval()
    long_emb = torch.randn(2, 12, 8)
    with torch.no_grad():
        out, states = model.forward_train(long_emb, torch.ones(2, 12), torch.randn(2, 4, 8), torch.ones(2, 4))
        other_recent = model(long_emb, torch.ones(2, 12), torch.randn(2, 4, 8), torch.ones(2, 4))
    assert out.shape == (2, 4, 8) and states is None
    assert torch.allclose(out, other_recent)  # recent items play no part without the LLM
    try:
        HybridRecommender(HybridConfig(use_llm=False, use_lightweight=False), item_dim=8, n_items=10)
    except ValueError as err:
        assert "use_llm=false needs use_lightweight=true" in str(err)
    else:
        raise AssertionError("an ablation with neither model must be refused")


def test_item_norm_starts_on_the_unit_sphere_and_scales_inner_product_scores():
    torch.manual_seed(0)
    cfg = HybridConfig(item_norm=True, item_id_residual=True, out_dim=8,
                       lightweight=LightweightConfig(model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=6).eval()
    emb = torch.randn(7, 8)
    vectors = model.item_vectors(emb)
    assert np.allclose(vectors[1:].norm(dim=-1).numpy(), 1.0, atol=1e-5)  # zero-initialised log-norms
    with torch.no_grad():
        model.item_tower.log_norm.weight[3] = float(np.log(2.0))
    scaled = model.item_vectors(emb)
    assert abs(float(scaled[3].norm()) - 2.0) < 1e-4 and torch.allclose(scaled[3] / 2.0, vectors[3], atol=1e-5)
    assert torch.allclose(scaled[[1, 2, 4, 5, 6]], vectors[[1, 2, 4, 5, 6]])  # only that item changed


def test_dense_training_samples_stride_by_the_recent_window():
    from training.batches import window_samples

    seqs = [np.arange(1, 202)]  # 201 items
    rng = np.random.default_rng(0)
    by_window = window_samples(seqs, window=3, samples_per_user=-1, rng=rng)
    by_recent = window_samples(seqs, window=3, samples_per_user=-1, rng=rng, stride=50)
    assert len(by_window) == 1 + 16  # (201 - 1) // 3 = 66 cuts, capped at 16
    assert len(by_recent) == 1 + 4  # (201 - 1) // 50 = 4: each sample supervises 50 positions
    assert by_recent[0] == (0, 198) and all(1 <= cut < 198 for _, cut in by_recent[1:])


def test_sasrec_loss_on_labelled_positions_equals_the_padded_loss():
    import torch.nn.functional as F

    from training.sasrec import SASRec, SASRecConfig, next_item_loss

    torch.manual_seed(0)
    model = SASRec(9, SASRecConfig(dim=8, max_len=6, dropout=0.0)).eval()
    rows = torch.tensor([[0, 0, 0, 4, 2, 7, 1], [3, 5, 6, 8, 9, 2, 4]])
    inputs, labels = rows[:, :-1], rows[:, 1:]
    padded = model(inputs) @ model.item_emb.weight.T
    reference = F.cross_entropy(padded.reshape(-1, 10), labels.reshape(-1), ignore_index=0)
    assert torch.allclose(next_item_loss(model, rows), reference)


def test_sasrec_overlapping_windows_predict_every_target_once_from_a_long_context():
    import torch.nn.functional as F

    from training.sasrec import SASRec, SASRecConfig, next_item_loss, training_windows

    seq = np.arange(1, 24)  # 23 items: targets are items 2..23
    side_by_side = training_windows([seq], max_len=6)
    overlapping = training_windows([seq], max_len=6, stride=2)
    assert [w.tolist() for w in side_by_side[:2]] == [list(range(17, 24)), list(range(11, 18))]
    assert len(overlapping) == 11 and overlapping[1].tolist() == list(range(15, 22))

    def counted_targets(windows, stride):  # the labels a window's loss counts: its last `stride`
        return [int(t) for w in windows for t in w[1:][-stride:] if t > 0]
    assert sorted(counted_targets(side_by_side, 6)) == list(range(2, 24))
    assert sorted(counted_targets(overlapping, 2)) == list(range(2, 24))  # each target exactly once
    # every counted target has max_len - stride + 1 = 5 items of context before it, or all the items before it
    contexts = {int(w[p]): p for w in overlapping for p in range(len(w) - 2, len(w))}  # item v: v - 1 before it
    assert all(p >= min(5, v - 1) for v, p in contexts.items()) and min(contexts.values()) == 1
    assert min(p for v, p in contexts.items() if v > 6) == 5  # side by side: down to 1 (a window's first label)

    torch.manual_seed(0)
    model = SASRec(30, SASRecConfig(dim=8, max_len=6, dropout=0.0)).eval()
    rows = torch.tensor([[0, 0, 0, 4, 2, 7, 1], [3, 5, 6, 8, 9, 2, 4]])
    logits = model(rows[:, :-1])[:, -2:] @ model.item_emb.weight.T
    reference = F.cross_entropy(logits.reshape(-1, 31), rows[:, -2:].reshape(-1))
    assert torch.allclose(next_item_loss(model, rows, stride=2), reference)
    with pytest.raises(ValueError, match="train_stride must be in"):
        SASRecConfig(max_len=6, train_stride=7)


def test_served_interests_add_the_newest_items_next_item_vector_when_anchored():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="anchor_last_item=true needs next_item_weight > 0"):
        HybridRecommender(HybridConfig(anchor_last_item=True, next_item_weight=0.0), item_dim=8, n_items=20)
    cfg = HybridConfig(n_interests=2, out_dim=8, item_tower_dropout=0.0, anchor_last_item=True, next_item_weight=1.0,
                       lightweight=LightweightConfig(model_dim=16, dropout=0.0),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64, dropout=0.0))
    model = HybridRecommender(cfg, item_dim=8, n_items=20).eval()
    long_emb = torch.randn(2, 12, 8)
    recent = torch.cat([torch.zeros(2, 2, 8), torch.randn(2, 4, 8)], 1)  # left padding: newest item at N - 1
    mask_l, mask_r = torch.ones(2, 12), torch.cat([torch.zeros(2, 2), torch.ones(2, 4)], 1)
    with torch.no_grad():
        served = model(long_emb, mask_l, recent, mask_r)  # what export / Triton run (LLMRecommender.forward)
        trained, states = model.forward_train(long_emb, mask_l, recent, mask_r)
        hidden = model.llm.hidden_states(model.coarse_interests(long_emb, mask_l), recent, mask_r).float()
        plain = model.llm.head(hidden[:, -2:])
    assert torch.allclose(trained, plain, atol=1e-6)  # training supervises each head on its own
    expected = torch.nn.functional.normalize(plain + states[:, -1:], dim=-1)
    assert torch.allclose(served, expected, atol=1e-5) and not torch.allclose(served, plain, atol=1e-3)
    assert torch.allclose(served.norm(dim=-1), torch.ones(2, 2), atol=1e-5)


def test_narrow_recent_id_table_starts_at_zero_through_its_projection_and_bakes_into_the_serving_table():
    torch.manual_seed(0)
    cfg = HybridConfig(recent_id_embedding=True, recent_id_dim=4, out_dim=8,
                       lightweight=LightweightConfig(model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=20).eval()
    assert tuple(model.recent_id.weight.shape) == (21, 4) and float(model.recent_id.weight[0].abs().sum()) == 0.0
    exact = torch.randn(21, 8)
    ids = torch.tensor([[0, 3, 5]])
    assert torch.equal(model.recent_embeddings(exact, ids), exact[ids])  # the up-projection starts at zero
    with torch.no_grad():
        model.recent_id_up.weight.normal_()
    table = model.recent_table(exact)
    assert torch.allclose(table[ids], model.recent_embeddings(exact, ids), atol=1e-6)
    assert torch.allclose(table[0], exact[0]) and not torch.allclose(table[5], exact[5])


def test_id_init_copies_a_trained_table_into_every_id_table_of_its_width():
    torch.manual_seed(0)
    cfg = HybridConfig(item_id_residual=True, recent_id_embedding=True, recent_id_dim=8, out_dim=8, id_init="sasrec",
                       lightweight=LightweightConfig(model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=12, n_items=6)
    trained = torch.randn(7, 8)
    trained[0] = 0
    assert model.init_ids_from(trained) == ["item_tower.id_residual", "recent_id"]
    assert torch.equal(model.item_tower.id_residual.weight, trained) and torch.equal(model.recent_id.weight, trained)
    with pytest.raises(ValueError, match="no id table of shape"):
        model.init_ids_from(torch.randn(7, 5))
    with pytest.raises(ValueError, match="id_init must be"):
        HybridRecommender(HybridConfig(id_init="glove"), item_dim=8, n_items=6)


def test_sasrec_recbole_layout_normalises_inputs_and_drops_attention_only_in_training():
    from training.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    ours = SASRec(50, SASRecConfig(dim=16, max_len=8))
    recbole = SASRec(50, SASRecConfig(dim=16, max_len=8, attn_dropout=0.5, post_ln=True, input_norm=True))
    assert ours.pos_emb.weight.std() > 0.5 and recbole.pos_emb.weight.std() < 0.03  # N(0, 1) vs N(0, 0.02)
    ids = torch.tensor([[0, 0, 3, 9, 4, 1, 7, 2]])
    recbole.eval()
    out = recbole(ids)
    assert torch.allclose(out, recbole(ids))  # no dropout at inference
    assert torch.allclose(out.mean(-1), torch.zeros(1, 8), atol=1e-5)  # post-LN: every output is a LayerNorm's
    block = recbole.blocks[0].train()
    x, mask = torch.randn(1, 8, 16), torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
    block.drop.p = 0.0  # only the attention dropout left
    assert not torch.allclose(block(x, mask), block(x, mask))
    block.attn_dropout = 0.0
    assert torch.allclose(block(x, mask), block(x, mask))


def test_sasrec_positions_from_start_make_a_short_history_independent_of_its_padding():
    from training.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    history, padded = torch.tensor([[5, 9, 2]]), torch.tensor([[0, 0, 0, 0, 0, 5, 9, 2]])
    recbole = SASRec(20, SASRecConfig(dim=16, max_len=8, positions_from_start=True)).eval()
    # the oldest item is position 0 however much padding precedes it (padding is masked from attention)
    assert torch.allclose(recbole(history)[:, -1], recbole(padded)[:, -1], atol=1e-5)
    ours = SASRec(20, SASRecConfig(dim=16, max_len=8)).eval()
    ours.load_state_dict(recbole.state_dict())
    # our default counts back from the newest item: the same three items sit at positions 5..7 when padded
    assert not torch.allclose(ours(history)[:, -1], ours(padded)[:, -1], atol=1e-3)
    full = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])  # a full window: both counts are the same positions
    assert torch.allclose(ours(full), recbole(full))
