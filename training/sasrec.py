"""SASRec baseline (Kang & McAuley 2018) with a full-softmax cross-entropy loss over all items.

Trained on the same split and scored by the same evaluator as HyMiRec. For datasets without
item text its item-embedding table also serves as HyMiRec's stage-1 item embeddings.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from training.batches import left_pad
from training.evaluate import evaluate_scores, merge_metric_batches, subsample_eval
from training.lightweight import CausalBlock
from training.resume import load_checkpoint, save_checkpoint


@dataclass
class SASRecConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 30
    patience: int = 5
    seed: int = 0
    max_train_seconds: float | None = None  # stop at the first epoch end past this budget
    # Layout choices where RecBole's SASRec differs from ours (bench.sasrec_sweep --set; chosen on validation):
    attn_dropout: float = 0.0  # dropout on attention weights (RecBole: 0.5)
    post_ln: bool = False  # LayerNorm after each residual sum, no final norm (RecBole), instead of pre-LN
    input_norm: bool = False  # LayerNorm(item + position embedding), no sqrt(dim) scale, every weight N(0, 0.02)
    # Training windows overlap by max_len - train_stride items and only each window's last train_stride labels
    # count, so every target is predicted from at least max_len - train_stride + 1 earlier items (RecBole predicts
    # each from its whole prefix, up to max_len). 0: windows side by side, a target sees 1 to max_len items.
    train_stride: int = 0
    # Position 0 is each window's oldest item (RecBole counts positions from the sequence start), instead of
    # position max_len - 1 being the newest: the model then sees how many items a short history holds.
    positions_from_start: bool = False

    def __post_init__(self):
        if not 0 <= self.dropout < 1 or not 0 <= self.attn_dropout < 1:
            raise ValueError(f"SASRec dropout and attn_dropout must be in [0, 1), got {self.dropout} and "
                             f"{self.attn_dropout} (train.sasrec_dropout)")
        if not 0 <= self.train_stride <= self.max_len:
            raise ValueError(f"SASRec train_stride must be in [0, max_len={self.max_len}], got {self.train_stride} "
                             "(train.sasrec_train_stride)")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"SASRec needs batch_size >= 1 and lr > 0, got {self.batch_size} and {self.lr} "
                             "(train.sasrec_batch_size, train.sasrec_lr)")


class SASRec(nn.Module):
    """forward(ids [B, T], left-padded) → hidden states [B, T, dim]; scores = hidden @ item_emb.T (tied)."""

    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.blocks = nn.ModuleList(CausalBlock(config.dim, config.n_heads, config.dropout, config.attn_dropout,
                                                config.post_ln) for _ in range(config.n_layers))
        self.input_norm = nn.LayerNorm(config.dim) if config.input_norm else nn.Identity()
        self.norm = nn.Identity() if config.post_ln else nn.LayerNorm(config.dim)  # post-LN blocks end normed
        self.drop = nn.Dropout(config.dropout)
        if config.input_norm:  # BERT's and RecBole's initialisation: the position table as small as the item table
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.item_emb.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        valid = ids > 0
        scale = 1.0 if self.config.input_norm else self.config.dim ** 0.5
        if self.config.positions_from_start:  # left padding: the first real item is position 0
            positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        else:
            positions = torch.arange(t, device=ids.device)[None]
        x = self.item_emb(ids) * scale + self.pos_emb(positions)
        x = self.drop(self.input_norm(x)) * valid[..., None]
        mask = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()[None] & valid[:, None, :]
        mask = (mask | torch.eye(t, dtype=torch.bool, device=ids.device)[None])[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    @torch.no_grad()
    def score(self, histories: list[np.ndarray], batch: int = 256) -> np.ndarray:
        """Full scores [U, n_items+1] for the next item after each history."""
        self.eval()
        device = self.item_emb.weight.device
        out = []
        for start in range(0, len(histories), batch):
            ids = torch.from_numpy(left_pad(histories[start:start + batch], self.config.max_len)).to(device)
            out.append((self(ids)[:, -1] @ self.item_emb.weight.T).float().cpu().numpy())
        return np.concatenate(out)


def training_windows(train_sequences: list[np.ndarray], max_len: int, stride: int | None = None) -> list[np.ndarray]:
    """Cut every sequence into windows of max_len + 1 items ending every ``stride`` items (from the end; default
    max_len: side by side), so users with histories longer than max_len contribute all their interactions, not only
    the last max_len. Each target is among exactly one window's last ``stride`` labels (the loss counts only those)."""
    windows = []
    for seq in train_sequences:
        for end in range(len(seq), 1, -(stride or max_len)):
            windows.append(seq[max(0, end - max_len - 1):end])
    return windows


def next_item_loss(model: SASRec, rows: torch.Tensor, stride: int | None = None) -> torch.Tensor:
    """Full-softmax CE of every position's next item; rows [B, T+1] left-padded windows; with ``stride``, of the
    last ``stride`` positions only (the earlier ones are some other window's, with less context there).

    Logits only where there is a label: on short-history datasets (Beauty, Games: ~9 items in a 50-slot
    window) most positions are padding, and the [P, n_items+1] softmax is the step's main cost.
    """
    inputs, labels = rows[:, :-1], rows[:, 1:]
    valid = labels > 0
    if stride:
        valid[:, :labels.shape[1] - stride] = False
    logits = model(inputs)[valid] @ model.item_emb.weight.T  # [P, n_items+1]
    return F.cross_entropy(logits, labels[valid])


def evaluate_sasrec(model: SASRec, eval_set, chunk: int = 2048, max_users: int | None = None) -> dict:
    """Full-ranking metrics, scored in user chunks so [U, n_items] never has to fit in memory at once."""
    histories, targets = subsample_eval(eval_set.histories, eval_set.targets, max_users)
    parts = [evaluate_scores(model.score(histories[i:i + chunk]), histories[i:i + chunk], targets[i:i + chunk])
             for i in range(0, len(histories), chunk)]
    return merge_metric_batches(parts)


def train_sasrec(train_sequences: list[np.ndarray], n_items: int, valid_set, config: SASRecConfig,
                 device: torch.device | str = "cpu", progress: bool = True, log=print,
                 max_eval_users: int | None = None, checkpoint: str | Path | None = None,
                 pause_after: float | None = None) -> tuple[SASRec, dict]:
    """Train to early stopping on validation NDCG@10 → (the best epoch's model, {"epochs", "best_valid_ndcg10"}).

    With ``checkpoint`` and ``pause_after``: at the first epoch end past ``pause_after`` seconds the whole training
    state (weights, optimiser, both random generators, the early-stopping state) goes to ``checkpoint`` and the
    result says ``"paused": True``; the same call later resumes from it and ends exactly where one uninterrupted
    run would (a slow dataset trained across CPU sessions). The caller deletes the checkpoint once it has the result.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SASRec(n_items, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    stride = config.train_stride or config.max_len
    padded = left_pad(training_windows(train_sequences, config.max_len, stride),
                      config.max_len + 1)  # inputs [:, :-1], labels [:, 1:]
    best, best_state, bad, history = -1.0, None, 0, []
    saved = None if checkpoint is None else load_checkpoint(checkpoint, asdict(config), asdict(SASRecConfig()), rng,
                                                            "SASRec")
    if saved is not None:  # the model's settings must match; the epoch cap and time budget may change between calls
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        best, best_state, bad, history = saved["best"], saved["best_state"], saved["bad"], saved["history"]
        log(f"[sasrec] resumed after epoch {len(history)} (best valid NDCG@10 {best:.4f})")
    budget_start = time.perf_counter()
    for epoch in range(len(history), config.epochs):
        model.train()
        started = time.perf_counter()
        order = rng.permutation(len(padded))
        losses = []
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"sasrec epoch {epoch + 1}",
                          disable=not progress, leave=False):
            rows = torch.from_numpy(padded[order[start:start + config.batch_size]]).to(device)
            loss = next_item_loss(model, rows, stride)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        metrics = evaluate_sasrec(model, valid_set, max_users=max_eval_users)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "valid": metrics,
                        "seconds": time.perf_counter() - started})
        log(f"[sasrec] epoch {epoch + 1}: loss {np.mean(losses):.4f} valid NDCG@10 {metrics['NDCG@10']:.4f}")
        if metrics["NDCG@10"] > best:
            best, best_state, bad = metrics["NDCG@10"], copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= config.patience:
                break
        if config.max_train_seconds is not None and time.perf_counter() - budget_start > config.max_train_seconds:
            log(f"[sasrec] time budget of {config.max_train_seconds:.0f}s reached after epoch {epoch + 1}")
            break
        if (checkpoint is not None and pause_after is not None and epoch + 1 < config.epochs
                and time.perf_counter() - budget_start > pause_after):
            save_checkpoint(checkpoint, asdict(config), rng, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            best=best, best_state=best_state, bad=bad, history=history)
            log(f"[sasrec] paused after epoch {epoch + 1}; {checkpoint} resumes it")
            return model, {"epochs": history, "best_valid_ndcg10": best, "paused": True}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, {"epochs": history, "best_valid_ndcg10": best}


def save_trained(path: str | Path, model: SASRec, config: SASRecConfig, n_items: int, info: dict,
                 max_eval_users: int | None = None) -> None:
    """A finished training's model with what it was trained with (``max_eval_users``: the validation users its early
    stopping read, None = all), for :func:`load_trained`: a sweep's point reused by a run with the same settings,
    rather than trained twice (on a slow dataset that is hours)."""
    epochs = info["epochs"]
    torch.save({"model": model.state_dict(), "config": asdict(config), "n_items": n_items,
                "max_eval_users": max_eval_users,
                "valid_best_ndcg10": info["best_valid_ndcg10"], "epochs": len(epochs),
                "train_seconds": sum(e["seconds"] for e in epochs)}, path)


def load_trained(path: str | Path, n_items: int, config: SASRecConfig, max_eval_users: int | None = None,
                 device: torch.device | str = "cpu") -> tuple[SASRec, dict]:
    """The SASRec :func:`save_trained` kept at ``path``, which must have been trained with ``config`` and validated on
    ``max_eval_users`` on a catalogue of ``n_items``; else a ValueError naming what differs. Returns the model and its
    training record (valid_best_ndcg10, epochs, train_seconds). Same settings and catalogue do not prove the same
    split: the caller names a file trained on its data (bench.sasrec_sweep.chosen_overrides checks the dataset)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"train.sasrec_weights: no saved SASRec at {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    wanted = {**asdict(config), "max_eval_users": max_eval_users}
    kept = {**saved["config"], "max_eval_users": saved.get("max_eval_users")}  # absent: validated on every user
    differ = {k: (kept.get(k), v) for k, v in wanted.items() if kept.get(k) != v}
    if differ:
        raise ValueError(f"train.sasrec_weights: {path} was trained with other settings (saved, this run's): {differ}")
    if saved["n_items"] != n_items:
        raise ValueError(f"train.sasrec_weights: {path} was trained on {saved['n_items']} items, this run's data has "
                         f"{n_items}")
    model = SASRec(n_items, config).to(device)
    model.load_state_dict(saved["model"])
    return model, {k: saved[k] for k in ("valid_best_ndcg10", "epochs", "train_seconds")}
