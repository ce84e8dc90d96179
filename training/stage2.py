"""Stage 2: train the hybrid recommender (lightweight + LLM) with DMIL, early-stopped on validation NDCG@10."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from training.batches import (ModelInputs, batch_indices, long_lengths, model_inputs, strided_cuts, train_batch,
                              window_samples)
from training.config import HybridConfig, TrainConfig
from training.dmil import (DMILStats, dmil_loss, interest_stats, logit_scale_value, max_merge_loss, missed_targets,
                           nearest_query_assignment, next_item_loss, route_targets)
from training.evaluate import evaluate_interests, subsample_eval
from training.hybrid import HybridRecommender
from training.protocols import interest_window_metrics, is_window, subsample, valid_metric
from training.resume import load_checkpoint, save_checkpoint


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class ItemTables:
    """exact [n_items+1, d_item] frozen stage-1 embeddings; long [n_items+1, d_item] what the long
    history sees (codebook-decoded, or exact for the no-codebook ablation)."""

    exact: torch.Tensor
    long: torch.Tensor


def _tensors(model: HybridRecommender, inputs: ModelInputs, tables: ItemTables, device: torch.device):
    long_ids = torch.from_numpy(inputs.long_ids).to(device)
    recent_ids = torch.from_numpy(inputs.recent_ids).to(device)
    return (tables.long[long_ids], (long_ids > 0).float(), model.recent_embeddings(tables.exact, recent_ids),
            (recent_ids > 0).float())


@torch.no_grad()
def predict_interests(model: HybridRecommender, tables: ItemTables, histories: list[np.ndarray],
                      batch: int = 256, long_len: int | None = None) -> np.ndarray:
    """histories (item indices) → interests [U, K, d_out] float32."""
    model.eval()
    device = tables.exact.device
    cfg = model.config
    long_len = long_len or cfg.long_len
    if long_len > cfg.lightweight.max_len:
        raise ValueError(f"long_len {long_len} exceeds the model's position table "
                         f"(lightweight.max_len={cfg.lightweight.max_len})")
    out = []
    for start in range(0, len(histories), batch):
        inputs = model_inputs(histories[start:start + batch], long_len, cfg.recent_n, cfg.long_window)
        out.append(model(*_tensors(model, inputs, tables, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, cfg.n_interests, cfg.out_dim), np.float32)


def evaluate_hybrid(model, tables, eval_set, batch: int = 256, max_users: int | None = None) -> dict:
    """Validation metrics under the eval set's protocol (training/protocols.py): leave-one-out next-item metrics,
    or window set metrics (max merge) for a window set."""
    vectors = model.item_vectors(tables.exact).float().cpu().numpy()
    if is_window(eval_set):
        part = subsample(eval_set, max_users)
        interests = predict_interests(model, tables, part.histories, batch)
        return interest_window_metrics(interests, vectors, part, batch_size=batch)[0]
    histories, targets = subsample_eval(eval_set.histories, eval_set.targets, max_users)
    interests = predict_interests(model, tables, histories, batch)
    return evaluate_interests(interests, vectors, histories, targets)


def epoch_samples(train_sequences: list[np.ndarray], hybrid: HybridConfig, samples_per_user: int,
                  rng: np.random.Generator) -> list[tuple[int, int]]:
    """One epoch's (sequence index, cut) training samples: strided cuts (hybrid.train_stride), or random cuts, one
    per recent window when the dense next-item loss is on (each sample supervises N positions), one per W else."""
    if hybrid.train_stride:
        return strided_cuts(train_sequences, hybrid.train_stride)
    stride = hybrid.recent_n if hybrid.next_item_weight > 0 else hybrid.window
    return window_samples(train_sequences, hybrid.window, samples_per_user, rng, stride=stride)


def interest_losses(model, hybrid: HybridConfig, interests, target_vecs, target_ids, target_mask, mask_np,
                    neg_vecs, neg_ids, rng) -> tuple[torch.Tensor, DMILStats]:
    """The losses on the K interest outputs [B, K, d]: DMIL's routed per-query InfoNCE (× dmil_weight) and the
    max-merge InfoNCE (× max_merge_weight). With dmil_weight 0 nothing is routed, and the stats' loss and query
    shares describe the max-merge loss and which interest scores each target highest."""
    # holistic_interest: query 0 learns every target (as K = 1's query does); the rest are routed
    routed = interests[:, 1:] if hybrid.holistic_interest else interests
    unit_targets = F.normalize(target_vecs.detach(), dim=-1).cpu().numpy()
    if hybrid.residual_rank > 0:  # the other queries learn only what the first one ranks low
        target_mask = target_mask & missed_targets(interests[:, 0], target_vecs, neg_vecs, hybrid.residual_rank)
        mask_np = target_mask.cpu().numpy()
        if not mask_np.any():  # the first query ranks every target of the batch high: nothing for the others
            loss = interests.new_zeros(())
            return loss, interest_stats(loss, routed, target_ids.new_zeros(0), logit_scale_value(model.logit_scale))
    if hybrid.dmil_weight > 0:
        assignment = route_targets(routed.detach().cpu().numpy(), unit_targets, mask_np, hybrid.interest_routing,
                                   rng)
        loss, stats = dmil_loss(routed, target_vecs, target_ids, target_mask,
                                torch.from_numpy(assignment).to(target_ids.device), neg_vecs, neg_ids,
                                model.logit_scale, hybrid.false_negative_threshold)
        loss = hybrid.dmil_weight * loss
    else:
        loss, stats = interests.new_zeros(()), None
    if hybrid.max_merge_weight > 0:
        merged = max_merge_loss(interests, target_vecs, target_ids, target_mask, neg_vecs, neg_ids,
                                model.logit_scale, hybrid.false_negative_threshold, hybrid.max_merge_softness)
        loss = loss + hybrid.max_merge_weight * merged
        if stats is None:  # which interest wins each target: does one query take everything?
            best = nearest_query_assignment(interests.detach().cpu().numpy(), unit_targets, mask_np)
            stats = interest_stats(merged, interests, torch.from_numpy(best[best >= 0]).to(interests.device),
                                   logit_scale_value(model.logit_scale))
    if stats is None:
        raise ValueError("hybrid.dmil_weight=0 needs hybrid.max_merge_weight > 0 (nothing would train the interests)")
    return loss, stats


def train_hybrid(model: HybridRecommender, tables: ItemTables, train_sequences: list[np.ndarray], valid_set,
                 hybrid: HybridConfig, train: TrainConfig, progress: bool = True, log=print,
                 checkpoint: str | Path | None = None, pause_after: float | None = None) -> dict:
    """Trains in place; restores the best validation state. Returns the training history.

    With ``checkpoint`` and ``pause_after``: at the first epoch end past ``pause_after`` seconds the whole training
    state goes to ``checkpoint`` and the history says ``"paused": True``; the same call resumes it from there
    (training/resume.py). The caller deletes the checkpoint once the training has ended.
    """
    if not 0 <= hybrid.train_stride <= hybrid.recent_n:
        raise ValueError(f"hybrid.train_stride must be in [0, recent_n={hybrid.recent_n}], got {hybrid.train_stride}")
    device = tables.exact.device
    rng = np.random.default_rng(train.seed)
    torch.manual_seed(train.seed)
    n_items = tables.exact.shape[0] - 1
    all_ids = torch.arange(n_items + 1, device=device)
    full_softmax = hybrid.n_negatives < 0 or hybrid.n_negatives >= n_items
    dense = hybrid.next_item_weight > 0
    params = model.optimizer_groups(train.lr, hybrid.llm.lr) if hybrid.llm.lr > 0 else model.parameters()
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if not 0.0 <= train.ema_decay < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}")
    # The averaged copy is what gets validated and kept: it moves less from step to step than the raw
    # weights, so the epoch picked on a small validation set is less a matter of luck.
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(train.ema_decay), use_buffers=True,
    ) if train.ema_decay > 0 else None
    scored = ema.module if ema is not None else model
    use_bf16 = device.type == "cuda"
    best, best_state, bad_epochs, history = -1.0, None, 0, []
    settings = {"hybrid": asdict(hybrid), "train": asdict(train)}
    saved = None if checkpoint is None else load_checkpoint(
        checkpoint, settings, {"hybrid": asdict(HybridConfig()), "train": asdict(TrainConfig())}, rng, "stage-2")
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        best, best_state, bad_epochs, history = saved["best"], saved["best_state"], saved["bad"], saved["history"]
        log(f"[hybrid] resumed after epoch {len(history)} (best valid {best:.4f})")
    key = valid_metric(valid_set)  # what early stopping follows: NDCG@10 (leave-one-out) or Recall@50 (window)
    budget_start = time.perf_counter()
    for epoch in range(len(history), train.epochs):
        model.train()
        started = time.perf_counter()
        samples = epoch_samples(train_sequences, hybrid, train.samples_per_user, rng)
        lengths = long_lengths(samples, hybrid.long_len, hybrid.recent_n, hybrid.long_window) \
            if train.length_buckets else np.zeros(len(samples), np.int64)
        bar = tqdm(batch_indices(lengths, train.batch_size, train.length_buckets, rng),
                   desc=f"hybrid epoch {epoch + 1}/{train.epochs}", disable=not progress, leave=False)
        losses, shares, inter = [], [], []
        for indices in bar:
            chosen = [samples[i] for i in indices]
            batch = train_batch(train_sequences, chosen, hybrid.long_len, hybrid.recent_n, hybrid.window,
                                hybrid.long_window)
            recent_ids = torch.from_numpy(batch.recent_ids).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                interests, recent_vecs = model.forward_train(*_tensors(model, batch, tables, device))
            interests = interests.float()
            target_ids = torch.from_numpy(batch.target_ids).to(device)
            # The whole catalogue through the item tower once per step: the exact softmax for small
            # catalogues, and the classes of the dense next-item loss.
            catalogue = model.item_tower(tables.exact, all_ids) if (full_softmax or dense) else None
            target_vecs = catalogue[target_ids] if catalogue is not None else \
                model.item_tower(tables.exact[target_ids], target_ids)
            if full_softmax:
                neg_ids, neg_vecs = all_ids[1:], catalogue[1:]
            else:
                neg_ids = torch.from_numpy(rng.integers(1, n_items + 1, size=hybrid.n_negatives)).to(device)
                neg_vecs = model.item_tower(tables.exact[neg_ids], neg_ids)
            target_mask = torch.from_numpy(batch.target_mask).to(device)
            loss, stats = interest_losses(model, hybrid, interests, target_vecs, target_ids, target_mask,
                                          batch.target_mask, neg_vecs, neg_ids, rng)
            if hybrid.holistic_interest:
                loss = loss + dmil_loss(interests[:, :1], target_vecs, target_ids, target_mask,
                                        torch.zeros_like(target_ids), neg_vecs, neg_ids, model.logit_scale,
                                        hybrid.false_negative_threshold)[0]
            if dense and recent_vecs is not None:
                loss = loss + hybrid.next_item_weight * next_item_loss(
                    recent_vecs.float(), recent_ids, target_ids[:, 0], catalogue, model.logit_scale,
                    last=hybrid.train_stride)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(stats.loss)
            shares.append(stats.query_share)
            inter.append(stats.inter_query_cos)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", tau=f"{stats.temperature:.3f}")
        metrics = evaluate_hybrid(scored, tables, valid_set, train.eval_batch, train.max_eval_users)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - started,
                  "query_share": np.mean(shares, axis=0).round(3).tolist(),
                  "inter_query_cos": float(np.mean(inter)), "valid": metrics}
        history.append(record)
        other = "Recall@10" if key == "NDCG@10" else "NDCG@50"
        log(f"[hybrid] epoch {epoch + 1}: loss {record['loss']:.4f} valid {key} {metrics[key]:.4f} "
            f"{other} {metrics[other]:.4f} query share {record['query_share']} "
            f"inter-query cos {record['inter_query_cos']:.3f} ({record['seconds']:.0f}s)")
        if metrics[key] > best:
            best, best_state, bad_epochs = metrics[key], copy.deepcopy(scored.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= train.patience:
                log(f"[hybrid] early stop after epoch {epoch + 1} (best valid {key} {best:.4f})")
                break
        if train.max_train_seconds is not None and time.perf_counter() - budget_start > train.max_train_seconds:
            log(f"[hybrid] time budget of {train.max_train_seconds:.0f}s reached after epoch {epoch + 1}")
            break
        if (checkpoint is not None and pause_after is not None and epoch + 1 < train.epochs
                and time.perf_counter() - budget_start > pause_after):
            save_checkpoint(checkpoint, settings, rng, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            ema=ema.state_dict() if ema is not None else None, best=best, best_state=best_state,
                            bad=bad_epochs, history=history)
            log(f"[hybrid] paused after epoch {epoch + 1}; {checkpoint} resumes it")
            return {"epochs": history, "valid_metric": key, "best_valid": best, "paused": True}
    if best_state is not None:
        model.load_state_dict(best_state)
    # best_valid_ndcg10: the leave-one-out name every reader of metrics.json knows; best_valid: any protocol's
    return {"epochs": history, "valid_metric": key, "best_valid": best,
            "best_valid_ndcg10": best if key == "NDCG@10" else None}
