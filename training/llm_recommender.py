"""LLM recommender: a transformers causal-LM backbone fed `inputs_embeds`.

Input sequence (all embeddings, no words):
    [e_{t-N+1} .. e_t]  ⊕  [coarse_1 .. coarse_Kc]  ⊕  [q_1 .. q_K]
The last-layer states at the K interest-query positions go through a projection head and L2
normalisation: those are the K refined interests. Default backbone: a small Qwen2 config built
locally (random init, trained here); `hybrid.llm.path` loads a local pretrained HF folder instead, or the
alias "smollm2" (SmolLM2-135M converted by set-up; training/pretrained_llm.py), truncated, re-initialised and/or
LoRA-tuned as asked (training/llm_backbone.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import LLMRecommenderConfig  # defined beside the run config, as HF keeps configuration files


def build_backbone(config: LLMRecommenderConfig, max_positions: int) -> tuple[nn.Module, int]:
    """A decoder stack (no LM head) and its width: the small Qwen2 config, or the pretrained model of
    ``config.path``. Local files only: nothing is fetched from a hub."""
    from transformers import AutoModel, Qwen2Config

    if config.path:
        from training.llm_backbone import load_pretrained_backbone

        model = load_pretrained_backbone(config.path, config.keep_layers, config.init)
        return model, int(model.config.hidden_size)
    if config.keep_layers or config.init != "pretrained":
        raise ValueError("hybrid.llm.keep_layers and hybrid.llm.init apply to a pretrained hybrid.llm.path; the "
                         "default backbone is always randomly initialised and sized by hybrid.llm.layers")
    backbone_config = Qwen2Config(
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        intermediate_size=config.intermediate,
        vocab_size=16,  # never used: the model only sees inputs_embeds
        max_position_embeddings=max_positions,
        attention_dropout=config.dropout,
    )
    backbone_config._attn_implementation = "sdpa"
    return AutoModel.from_config(backbone_config), config.hidden


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


_TIE = 1e-5  # cosines closer than this count as equal when picking centres and groups


def recent_clusters(recent_emb: torch.Tensor, recent_mask: torch.Tensor, k: int, iters: int = 5) -> torch.Tensor:
    """The user's recent items grouped into k tastes: recent_emb [B, N, d], recent_mask [B, N] (1 = item, left
    padding) → centres [B, k, d], each the mean embedding of one group (``hybrid.llm.query_seeds=recent_clusters``).

    Cosine k-means as DMIL groups its targets (training/dmil.py), batched and deterministic: the first centre is
    the newest item, each next one the item least like the centres so far (farthest-first), then ``iters``
    assign/update rounds. Fewer distinct items than k repeat a centre. Plain tensor ops with fixed loop counts,
    so the ONNX export traces it. The grouping is not differentiated; the means are (they carry the id tables).
    """
    unit = F.normalize(recent_emb.float(), dim=-1) * recent_mask[..., None]
    sims = unit @ unit.transpose(1, 2)  # [B, N, N]
    # Items are picked by one-hot rows, not by index: no Python number taken from a shape, so the traced ONNX graph
    # keeps N dynamic.
    slot = torch.ones_like(recent_mask).cumsum(1)  # 1..N
    picks = [(slot == slot[:, -1:]).float()]  # the newest item (left padding puts it last)  [B, N]
    closest = (sims * picks[0][:, None, :]).sum(-1)  # each item's cosine to its closest centre so far
    blocked = (recent_mask <= 0).float() * 4.0  # padding is never a centre (cosines are <= 1)
    for _ in range(k - 1):
        score = closest + blocked
        # ties within float noise (e.g. every item already a centre: all at cosine 1) go to the oldest item, so
        # eager PyTorch and ONNX Runtime pick the same one
        pick = (score <= score.min(1, keepdim=True).values + _TIE).float()
        pick = pick * (pick.cumsum(1) == 1).float()
        picks.append(pick)
        closest = torch.maximum(closest, (sims * pick[:, None, :]).sum(-1))
    chosen = torch.stack(picks, 1)  # [B, k, N] one-hot
    centres = chosen @ unit
    member = chosen.transpose(1, 2)
    for _ in range(iters):
        fit = unit @ centres.transpose(1, 2)  # [B, N, k]
        member = (fit >= fit.max(-1, keepdim=True).values - _TIE).float()
        member = member * (member.cumsum(-1) == 1).float() * recent_mask[..., None]  # one group per item
        total = member.transpose(1, 2) @ unit  # [B, k, d]
        empty = (member.sum(1) <= 0)[..., None]  # an emptied centre keeps its place
        centres = torch.where(empty, centres, F.normalize(total, dim=-1))
    member = member.detach()
    counts = member.sum(1)[..., None]  # [B, k, 1]
    means = (member.transpose(1, 2) @ recent_emb) / counts.clamp(min=1.0)
    # a centre with no member (fewer items than k) takes its seed item's embedding
    return torch.where(counts > 0, means, chosen @ recent_emb)


QUERY_SEEDS = ("learned", "recent_clusters")


class LLMRecommender(nn.Module):
    """forward(coarse [B, K_c, d_llm], recent_emb [B, N, d_item], recent_mask [B, N]) → interests [B, K, d_out].

    `recent_mask` is 1 for real items, 0 for left padding. The coarse block may be empty (K_c = 0)
    for the "no lightweight recommender" ablation.

    Token order is [recent items] ⊕ [coarse] ⊕ [queries]: the coarse interests summarise the whole long
    history, which contains the recent items, so under causal attention only positions *after* the recent
    block may see them. That keeps every recent-item state a leak-free next-item predictor, which the
    dense next-item loss (`HybridConfig.next_item_weight`) trains; the queries still see everything.
    """

    def __init__(self, config: LLMRecommenderConfig, item_dim: int, n_interests: int, out_dim: int,
                 max_positions: int = 512, anchor_last_item: bool = False):
        super().__init__()
        if config.query_seeds not in QUERY_SEEDS:
            raise ValueError(f"hybrid.llm.query_seeds must be one of {QUERY_SEEDS}, got {config.query_seeds!r}")
        self.config = config
        self.item_dim, self.n_interests, self.out_dim = item_dim, n_interests, out_dim
        self.max_positions = max_positions
        # served interest_k = normalise(head(query_k) + head(state after the newest item)) when anchored
        self.anchor_last_item = anchor_last_item
        from training.llm_backbone import apply_finetune

        backbone, self.hidden = build_backbone(config, max_positions)  # d_llm
        self.backbone = apply_finetune(backbone, config.finetune, config.lora_rank)
        self.recent_in = nn.Sequential(nn.Linear(item_dim, self.hidden), nn.LayerNorm(self.hidden))
        self.input_drop = nn.Dropout(config.input_dropout)
        self.interest_queries = nn.Parameter(torch.randn(n_interests, self.hidden) * 0.02)
        self.head = ProjectionHead(self.hidden, out_dim, config.dropout)

    def hidden_states(self, coarse: torch.Tensor, recent_emb: torch.Tensor, recent_mask: torch.Tensor) -> torch.Tensor:
        """→ last-layer states [B, N + K_c + K, d_llm] in token order (recent, coarse, queries)."""
        b = recent_emb.shape[0]
        k = self.n_interests
        recent = self.input_drop(self.recent_in(recent_emb)) * recent_mask[..., None]
        queries = self.interest_queries[None].expand(b, k, -1)
        if self.config.query_seeds == "recent_clusters":  # each query starts from one of the user's recent tastes
            queries = queries + self.input_drop(self.recent_in(recent_clusters(recent_emb, recent_mask, k)))
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
        interests = self.head(hidden[:, -self.n_interests:].float())
        if self.anchor_last_item and n > 0:
            interests = F.normalize(interests + self.head(hidden[:, n - 1:n].float()), dim=-1)
        return interests
