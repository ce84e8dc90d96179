"""The lightweight recommender's long window (HybridConfig.long_window): older items only or repeating the
recent ones, up to 1,024 items, and serving's Decode building exactly the inputs training built."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.history_window import long_window
from serving.run_artifacts import Artifacts
from serving.stages import Decode
from training.batches import model_inputs, train_batch
from features.codebook import CodebookConfig
from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig
from training.hybrid import HybridRecommender
from training.stage2 import ItemTables, predict_interests
from training.item_tables import decoded_item_table, fit_codebook

HISTORY = np.arange(1, 31, dtype=np.int64)  # 30 items, oldest first; item i sits at position i - 1


def test_older_window_holds_the_items_before_the_recent_ones():
    inputs = model_inputs([HISTORY], long_len=20, recent_n=5, long_window_mode="older")
    assert inputs.long_ids[0].tolist() == HISTORY[5:25].tolist()  # positions [5, 25): older than the recent 5
    assert inputs.recent_ids[0].tolist() == HISTORY[25:].tolist()
    # today's rule, still the default: the window ends at the newest item and repeats the recent 5
    default = model_inputs([HISTORY], long_len=20, recent_n=5)
    assert default.long_ids[0].tolist() == HISTORY[10:].tolist()
    assert default.recent_ids[0].tolist() == inputs.recent_ids[0].tolist()


def test_older_window_pads_short_histories_and_reaches_1024_items():
    short, mid, long = HISTORY[:4], HISTORY[:8], np.arange(1, 1201, dtype=np.int64)
    inputs = model_inputs([short, mid, long], long_len=1024, recent_n=5, long_window_mode="older")
    assert inputs.long_ids.shape == (3, 1024)
    assert not inputs.long_ids[0].any()  # 4 items, all of them recent: nothing older
    assert inputs.long_ids[1, -3:].tolist() == [1, 2, 3] and not inputs.long_ids[1, :-3].any()
    assert inputs.long_ids[2].tolist() == long[-5 - 1024:-5].tolist()
    assert inputs.recent_ids[0].tolist() == [0] + short.tolist()
    # training samples (input = seq[:cut]) follow the same rule
    batch = train_batch([HISTORY], [(0, 20)], long_len=10, recent_n=5, window=3, long_window_mode="older")
    assert batch.long_ids[0].tolist() == HISTORY[5:15].tolist()
    assert batch.recent_ids[0].tolist() == HISTORY[15:20].tolist()
    assert batch.target_ids[0].tolist() == HISTORY[20:23].tolist()


def test_long_window_rule_rejects_unknown_modes():
    with pytest.raises(ValueError, match="long_window must be one of"):
        long_window(10, 5, 2, "recent")
    with pytest.raises(ValueError, match="long_window must be one of"):
        HybridRecommender(HybridConfig(long_window="old"), 8, 30)


def test_long_len_is_capped_by_the_position_table():
    with pytest.raises(ValueError, match="long_len must be in 1..lightweight.max_len=1024"):
        HybridRecommender(HybridConfig(long_len=1025), 8, 30)
    config = HybridConfig(long_len=1024, long_window="older", recent_n=5, n_interests=2, out_dim=8,
                          item_tower_dropout=0.0,
                          lightweight=LightweightConfig(n_coarse=2, model_dim=8, n_layers=1, n_heads=1, dropout=0.0),
                          llm=LLMRecommenderConfig(hidden=16, layers=1, heads=2, kv_heads=1, intermediate=16,
                                                   dropout=0.0))
    model = HybridRecommender(config, 8, 1200).eval()
    exact = torch.randn(1201, 8)
    exact[0] = 0
    tables = ItemTables(exact=exact, long=exact)
    long = np.arange(1, 1201, dtype=np.int64)
    # predict_interests builds the long window from the model's own config (older items, 1,024 of them) ...
    got = predict_interests(model, tables, [long])
    inputs = model_inputs([long], 1024, 5, "older")
    ids = torch.from_numpy(inputs.long_ids)
    assert (ids > 0).all()  # all 1,024 positions hold an item: the whole position table is in use
    recent = torch.from_numpy(inputs.recent_ids)
    with torch.no_grad():
        want = model(exact[ids], (ids > 0).float(), exact[recent], (recent > 0).float()).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    # ... and the older items reach the interests: the "all" window (which stops 5 items later) gives others
    with torch.no_grad():
        ids_all = torch.from_numpy(model_inputs([long], 1024, 5, "all").long_ids)
        other = model(exact[ids_all], (ids_all > 0).float(), exact[recent], (recent > 0).float()).numpy()
    assert np.abs(other - got).max() > 1e-4
    with pytest.raises(ValueError, match="lightweight.max_len"):
        predict_interests(model, tables, [long], long_len=2048)


def _artifacts(exact: np.ndarray, codebook, codes, mode: str, recent_n: int, long_len: int) -> Artifacts:
    """What serving loads from a run directory, built in memory from the same arrays training used."""
    n = len(exact) - 1
    item_ids = ["[PAD]"] + [f"i{i}" for i in range(1, n + 1)]
    return Artifacts(root=Path("."), item_ids=item_ids, index_of={raw: i for i, raw in enumerate(item_ids) if i},
                     item_embeddings=exact, recent_embeddings=exact, item_codes=codes, codebook=codebook,
                     dims={"d_item": exact.shape[1], "recent_n": recent_n, "long_len": long_len,
                           "long_window": mode})


@pytest.mark.parametrize("mode", ["older", "all"])
def test_serving_decode_builds_the_inputs_training_builds(mode):
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(31, 8)).astype(np.float32)
    exact[0] = 0
    codebook, codes, _ = fit_codebook(exact, CodebookConfig(n_layers=2, codebook_size=8, kmeans_iters=5), 0,
                                      log=lambda *_: None)
    decoded = decoded_item_table(codebook, codes)  # what training's long branch looks items up in
    raw = [f"i{i}" for i in HISTORY]
    for history in (HISTORY, HISTORY[:7], HISTORY[:4]):
        inputs = model_inputs([history], long_len=20, recent_n=5, long_window_mode=mode)
        long_ids = inputs.long_ids[0][inputs.long_ids[0] > 0]
        recent_ids = inputs.recent_ids[0][inputs.recent_ids[0] > 0]
        # the online store: codes of the whole history (oldest first) and the last 50 raw ids
        store = {"codes": codes[history], "recent_items": tuple(raw[:len(history)][-50:]), "codebook_id": ""}
        out = Decode(_artifacts(exact, codebook, codes, mode, 5, 20)).run(store)
        assert out["history_mask"].sum() == len(long_ids)
        if len(long_ids):
            np.testing.assert_array_equal(out["history_emb"][0], decoded[long_ids])
        np.testing.assert_array_equal(out["recent_emb"][0], exact[recent_ids])
        # without a codebook (the ablation) the long window holds exact embeddings: one-hot rows name the ids
        onehot = np.eye(31, dtype=np.float32)
        out = Decode(_artifacts(onehot, None, None, mode, 5, 20)).run({"codes": np.zeros((0, 0)), **{
            "recent_items": store["recent_items"], "codebook_id": ""}})
        served = out["history_emb"][0].argmax(1)[out["history_mask"][0] > 0]
        assert served.tolist() == long_ids.tolist()
        assert out["recent_emb"][0].argmax(1).tolist() == recent_ids.tolist()


def test_export_manifest_carries_the_rule_and_onnx_serving_matches_training(tmp_path):
    """The exported manifest names the model's long window; serving's Decode + encoder.onnx on the stored codes
    give the coarse interests PyTorch gives on training's inputs."""
    from serving.stages import Encode
    from training.export.onnx_export import export_hybrid

    config = HybridConfig(long_len=20, long_window="older", recent_n=5, n_interests=2, out_dim=8,
                          item_tower_dropout=0.0,
                          lightweight=LightweightConfig(n_coarse=2, model_dim=8, n_layers=1, n_heads=1, dropout=0.0),
                          llm=LLMRecommenderConfig(hidden=16, layers=1, heads=2, kv_heads=1, intermediate=16,
                                                   dropout=0.0))
    torch.manual_seed(0)
    model = HybridRecommender(config, 8, 30).eval()
    manifest = export_hybrid(model, tmp_path, recent_n=config.recent_n, long_len=config.long_len, n_cases=2)
    assert manifest["dims"]["long_window"] == "older"

    rng = np.random.default_rng(0)
    exact = rng.normal(size=(31, 8)).astype(np.float32)
    exact[0] = 0
    codebook, codes, _ = fit_codebook(exact, CodebookConfig(n_layers=2, codebook_size=8, kmeans_iters=5), 0,
                                      log=lambda *_: None)
    art = _artifacts(exact, codebook, codes, "all", 5, 20)  # "all" here: the manifest's dims must win below
    art.dims = manifest["dims"]
    served = Decode(art).run({"codes": codes[HISTORY], "recent_items": tuple(f"i{i}" for i in HISTORY),
                              "codebook_id": ""})
    encode = Encode(tmp_path / "encoder.onnx")
    encode.start()
    coarse = encode.run({"history_emb": served["history_emb"], "history_mask": served["history_mask"]})["coarse"]

    inputs = model_inputs([HISTORY], config.long_len, config.recent_n, config.long_window)
    ids = torch.from_numpy(inputs.long_ids)
    table = torch.from_numpy(decoded_item_table(codebook, codes))
    with torch.no_grad():
        want = model.coarse_interests(table[ids], (ids > 0).float()).numpy()
    np.testing.assert_allclose(coarse, want, atol=1e-4)
