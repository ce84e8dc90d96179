"""The LLM recommender's backbone when ``hybrid.llm.path`` names a pretrained model, and its fine-tuning mode.

    load_pretrained_backbone(llm_path, keep_layers, init)  → a transformers base decoder (no LM head), fp32
    apply_finetune(backbone, mode, lora_rank)                → the same module, with what trains decided

The backbone only ever sees ``inputs_embeds`` [B, T, d_llm] and returns ``last_hidden_state`` [B, T, d_llm]
(d_llm = the model's hidden size: 576 for SmolLM2-135M), so its token embedding table is never read. It is
replaced by a one-row table: SmolLM2's is 49,152 × 576 = 28.3M of its 134.5M parameters, and keeping it would
only make every saved model.pt, best-state copy and EMA copy 113 MB bigger.

``keep_layers = n`` keeps the first n decoder layers (the checkpoint's other layers are not loaded): the model
that CPU runs and tests can afford. ``init = "random"`` builds the very same shape from the same config with
fresh weights (transformers' own initialisation), the control for "does pretraining help".
"""
from __future__ import annotations

import torch
from torch import nn

FINETUNE_MODES = ("full", "lora", "frozen")
INIT_MODES = ("pretrained", "random")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections (Llama and Qwen2 names)


def load_pretrained_backbone(llm_path: str, keep_layers: int = 0, init: str = "pretrained") -> nn.Module:
    """A local pretrained causal LM's decoder stack (AutoModel: no LM head) in fp32, offline.

    ``llm_path``: an alias ("smollm2") or a local HF folder (training.pretrained_llm.resolve_llm_path).
    ``keep_layers``: 0 = all layers; n = only the first n. ``init``: "pretrained" weights or "random" ones."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    from training.pretrained_llm import resolve_llm_path

    if init not in INIT_MODES:
        raise ValueError(f"hybrid.llm.init must be one of {INIT_MODES}, got {init!r}")
    path = resolve_llm_path(llm_path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    total = int(config.num_hidden_layers)
    if keep_layers < 0 or keep_layers > total:
        raise ValueError(f"hybrid.llm.keep_layers={keep_layers}: {path} has {total} decoder layers (0 = all)")
    if keep_layers:
        config.num_hidden_layers = keep_layers
        if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2, Gemma)
            config.layer_types = config.layer_types[:keep_layers]
    config.use_cache = False  # training and export never decode step by step: no KV cache objects
    if init == "pretrained":
        # With fewer layers than the checkpoint, the layers past n are "unused weights": expected, so the
        # loader's report of them is silenced rather than printed on every run (restored afterwards).
        verbosity, bars_off = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled() is False
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per model build would flood training logs
        try:
            model = AutoModel.from_pretrained(path, config=config, local_files_only=True, dtype=torch.float32,
                                              attn_implementation="sdpa")
        finally:
            hf_logging.set_verbosity(verbosity)
            if not bars_off:
                hf_logging.enable_progress_bar()
    else:
        model = AutoModel.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    # inputs_embeds only: the vocabulary table is dead weight (see the module docstring).
    model.set_input_embeddings(nn.Embedding(1, int(config.hidden_size)))
    return model


def apply_finetune(backbone: nn.Module, mode: str = "full", lora_rank: int = 8) -> nn.Module:
    """Decide which backbone weights train. "full": all (nothing changes, no randomness drawn). "frozen": none.
    "lora": peft LoRA adapters (rank ``lora_rank``, alpha = 2 × rank, no dropout) on the attention q/k/v/o
    projections, injected in place (no PeftModel wrapper, so the forward and the state-dict layout stay the
    backbone's own plus `lora_A`/`lora_B` tensors); only the adapters train. The layers around the backbone
    (input projection, interest queries, head, lightweight encoder) always train."""
    if mode not in FINETUNE_MODES:
        raise ValueError(f"hybrid.llm.finetune must be one of {FINETUNE_MODES}, got {mode!r}")
    if mode == "full":
        return backbone
    if mode == "frozen":
        return backbone.requires_grad_(False)
    if lora_rank < 1:
        raise ValueError(f"hybrid.llm.lora_rank must be >= 1, got {lora_rank}")
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, bias="none",
                      target_modules=list(LORA_TARGETS))
    backbone = inject_adapter_in_model(lora, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    return backbone


def backbone_summary(backbone: nn.Module) -> dict:
    """Counts for logs and metrics: parameters in all, trainable, decoder layers, hidden size."""
    params = list(backbone.parameters())
    return {"parameters": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "layers": int(getattr(backbone.config, "num_hidden_layers", 0)),
            "hidden": int(getattr(backbone.config, "hidden_size", 0))}
