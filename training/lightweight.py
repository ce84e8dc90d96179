"""Lightweight recommender: a small causal transformer over the *long* history.

It reads up to `max_len` codebook-decoded item embeddings (cheap to fetch: a few bytes per item)
and returns K_c coarse interest embeddings in the LLM's width. The K_c interest tokens are
appended after the history; with a causal mask each of them sees the whole history.

Written with plain `scaled_dot_product_attention` (no nn.TransformerEncoder fast path) so the
ONNX export keeps dynamic batch and history-length axes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import LightweightConfig  # defined beside the run config, as HF keeps configuration files


class CausalBlock(nn.Module):
    """One transformer block. Pre-LN by default; ``post_ln`` puts each LayerNorm after its residual sum (the
    original Transformer's and RecBole's SASRec layout), ``attn_dropout`` drops attention weights (RecBole: 0.5)."""

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float = 0.0, post_ln: bool = False):
        super().__init__()
        self.heads, self.attn_dropout, self.post_ln = heads, attn_dropout, post_ln
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.drop(self.proj(att.transpose(1, 2).reshape(b, s, d)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, S, D]; attn_mask: [B, 1, S, S] bool (True = may attend)."""
        if self.post_ln:
            x = self.norm1(x + self.attend(x, attn_mask))
            return self.norm2(x + self.drop(self.ffn(x)))
        x = x + self.attend(self.norm1(x), attn_mask)
        return x + self.drop(self.ffn(self.norm2(x)))


class LightweightEncoder(nn.Module):
    """Long history → K_c coarse interests.

    forward(history_emb [B, T, d_item], history_mask [B, T] float (1 = item, 0 = left padding))
        → coarse [B, K_c, d_llm]
    Histories are right-aligned (most recent item last); T ≤ max_len.
    """

    def __init__(self, config: LightweightConfig, item_dim: int, out_dim: int):
        super().__init__()
        self.config = config
        self.item_dim, self.out_dim = item_dim, out_dim  # d_item in, d_llm out
        dim = config.model_dim
        self.input = nn.Sequential(nn.Linear(item_dim, dim), nn.LayerNorm(dim))
        # Positions count back from the most recent item, so position 0 is always "latest".
        self.positions = nn.Embedding(config.max_len, dim)
        self.interest_tokens = nn.Parameter(torch.randn(config.n_coarse, dim) * 0.02)
        self.blocks = nn.ModuleList(
            CausalBlock(dim, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, history_emb: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = history_emb.shape
        k_c = self.config.n_coarse
        back = torch.arange(t - 1, -1, -1, device=history_emb.device)  # [T], 0 = most recent
        back = back.clamp(max=self.config.max_len - 1)
        x = self.input(history_emb) + self.positions(back)[None]
        x = self.drop(x * history_mask[..., None])
        x = torch.cat([x, self.interest_tokens[None].expand(b, k_c, -1)], dim=1)  # [B, T+K_c, D]

        s = t + k_c
        valid = torch.cat([history_mask > 0, torch.ones(b, k_c, dtype=torch.bool, device=x.device)], 1)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        mask = causal[None] & valid[:, None, :]  # [B, S, S]: causal and key is real
        mask = mask | torch.eye(s, dtype=torch.bool, device=x.device)[None]  # padding rows see themselves
        mask = mask[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.out(self.norm(x[:, t:]))  # [B, K_c, d_llm]
