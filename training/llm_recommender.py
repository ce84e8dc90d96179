"""LLM recommender: a transformers causal-LM backbone fed `inputs_embeds`.

Input sequence (all embeddings, no words):
    [e_{t-N+1} .. e_t]  ⊕  [coarse_1 .. coarse_Kc]  ⊕  [q_1 .. q_K]
The last-layer states at the K interest-query positions go through a projection head and L2
normalisation: those are the K refined interests. Default backbone: a small Qwen2 config built
locally (random init, trained here); `llm_path` loads a local pretrained HF folder instead, or the alias
"smollm2" (SmolLM2-135M converted by set-up; training/pretrained_llm.py), truncated, re-initialised and/or
LoRA-tuned as asked (training/llm_backbone.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LLMRecommenderConfig:
    item_dim: int = 384  # d_item of the exact recent-item embeddings
    n_interests: int = 3  # K
    out_dim: int = 64  # retrieval space
    llm_path: str | None = None
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    max_positions: int = 512
    dropout: float = 0.1
    input_dropout: float = 0.0  # dropout on the recent-item input embeddings (training only)
    anchor_last_item: bool = False  # served interest_k = normalise(head(query_k) + head(state after the newest item))
    keep_layers: int = 0  # llm_path only: keep the first n decoder layers (0 = all)
    init: str = "pretrained"  # llm_path only: "pretrained" weights or "random" (same shape, fresh weights)
    finetune: str = "full"  # "full" | "lora" | "frozen": what of the backbone trains (training/llm_backbone.py)
    lora_rank: int = 8


def build_backbone(config: LLMRecommenderConfig) -> nn.Module:
    """A decoder stack (no LM head): the small Qwen2 config, or the pretrained model of `llm_path`.
    Local files only: nothing is fetched from a hub."""
    from transformers import AutoModel, Qwen2Config

    if config.llm_path:
        from training.llm_backbone import load_pretrained_backbone

        model = load_pretrained_backbone(config.llm_path, config.keep_layers, config.init)
        config.hidden = int(model.config.hidden_size)
        return model
    if config.keep_layers or config.init != "pretrained":
        raise ValueError("hybrid.llm_keep_layers and hybrid.llm_init apply to a pretrained hybrid.llm_path; the "
                         "default backbone is always randomly initialised and sized by hybrid.llm_layers")
    backbone_config = Qwen2Config(
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        intermediate_size=config.intermediate,
        vocab_size=16,  # never used: the model only sees inputs_embeds
        max_position_embeddings=config.max_positions,
        attention_dropout=config.dropout,
    )
    backbone_config._attn_implementation = "sdpa"
    return AutoModel.from_config(backbone_config)


class ProjectionHead(nn.Module):
    """Linear → (GELU MLP residual) → LayerNorm → L2 normalise, as in the RED-Rec embedding head."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.Linear(out_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return F.normalize(self.norm(h + self.mlp(h)), dim=-1)


class LLMRecommender(nn.Module):
    """forward(coarse [B, K_c, d_llm], recent_emb [B, N, d_item], recent_mask [B, N]) → interests [B, K, d_out].

    `recent_mask` is 1 for real items, 0 for left padding. The coarse block may be empty (K_c = 0)
    for the "no lightweight recommender" ablation.

    Token order is [recent items] ⊕ [coarse] ⊕ [queries]: the coarse interests summarise the whole long
    history, which contains the recent items, so under causal attention only positions *after* the recent
    block may see them. That keeps every recent-item state a leak-free next-item predictor, which the
    dense next-item loss (`HybridConfig.next_item_weight`) trains; the queries still see everything.
    """

    def __init__(self, config: LLMRecommenderConfig):
        super().__init__()
        from training.llm_backbone import apply_finetune

        # build_backbone sets config.hidden when loading a pretrained model
        self.backbone = apply_finetune(build_backbone(config), config.finetune, config.lora_rank)
        self.config = config
        self.recent_in = nn.Sequential(nn.Linear(config.item_dim, config.hidden), nn.LayerNorm(config.hidden))
        self.input_drop = nn.Dropout(config.input_dropout)
        self.interest_queries = nn.Parameter(torch.randn(config.n_interests, config.hidden) * 0.02)
        self.head = ProjectionHead(config.hidden, config.out_dim, config.dropout)

    def hidden_states(self, coarse: torch.Tensor, recent_emb: torch.Tensor, recent_mask: torch.Tensor) -> torch.Tensor:
        """→ last-layer states [B, N + K_c + K, d_llm] in token order (recent, coarse, queries)."""
        b = recent_emb.shape[0]
        k = self.config.n_interests
        recent = self.input_drop(self.recent_in(recent_emb)) * recent_mask[..., None]
        queries = self.interest_queries[None].expand(b, k, -1)
        inputs = torch.cat([recent, coarse.to(recent.dtype), queries], dim=1)
        ones_c = torch.ones(b, coarse.shape[1], dtype=recent_mask.dtype, device=recent_mask.device)
        ones_q = torch.ones(b, k, dtype=recent_mask.dtype, device=recent_mask.device)
        mask = torch.cat([recent_mask, ones_c, ones_q], dim=1)
        # Positions skip left padding so a short history looks the same as an unpadded one.
        positions = (mask.cumsum(1) - 1).clamp(min=0).long()
        return self.backbone(inputs_embeds=inputs, attention_mask=mask.long(), position_ids=positions).last_hidden_state

    def forward(self, coarse: torch.Tensor, recent_emb: torch.Tensor, recent_mask: torch.Tensor) -> torch.Tensor:
        """The served interests. With ``anchor_last_item`` each one also adds the head's vector of the state
        after the newest recent item (left padding puts it at N − 1): the next-item prediction that the dense
        loss trains, while DMIL trains the query states. The two heads are trained apart and summed only here,
        an ensemble of two predictors of the same user (measured in BENCHMARKS.md)."""
        hidden = self.hidden_states(coarse, recent_emb, recent_mask)
        n = recent_emb.shape[1]
        interests = self.head(hidden[:, -self.config.n_interests:].float())
        if self.config.anchor_last_item and n > 0:
            interests = F.normalize(interests + self.head(hidden[:, n - 1:n].float()), dim=-1)
        return interests
