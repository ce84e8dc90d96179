"""`hymirec train`: the whole two-stage HyMiRec run, plus the popularity and SASRec baselines.

    start_run (data → split) → train_baselines → train_stage1 (item embeddings) → fit_run_codebook
        → train_stage2 (hybrid + DMIL, test metrics) → write_run (artifacts: core/artifacts.py RunLayout)

Besides the metrics, the run directory gets each method's test top-100 lists (popularity, SASRec, HyMiRec),
written under the peer protocol's rule (docs/peers.md: the user's whole history masked, the target unknown),
so the quality bench scores our methods and the peer libraries' lists with one code path.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.artifacts import RunLayout, write_json_atomic
from training.config import RunConfig
from training.evaluate import TOPK_LISTS, hybrid_test, sasrec_test
from training.item_tables import (content_item_embeddings, fit_codebook, hybrid_item_tables, init_ids_from_sasrec,
                                  item_texts_or_ids, reuse_stage1)
from training.resume import (RESUME_DIR, RunPaused, finished_step, keep_finished_step,
                             seconds_left)


def load_run_data(dataset: str, seed: int = 0):
    from training.data import load_dataset, synthetic

    return synthetic(seed=seed) if dataset == "synthetic" else load_dataset(dataset)


def resume_dir(state: "RunState") -> Path | None:
    """Where a run that may pause (``train.pause_after``) keeps what its next call resumes from; None otherwise."""
    return state.layout.root / RESUME_DIR if state.config.train.pause_after is not None else None


def pause_left(state: "RunState") -> float | None:
    """Seconds of ``train.pause_after`` this call has left (None: the run never pauses)."""
    return seconds_left(state.config.train.pause_after, time.perf_counter() - state.started)


@dataclass
class RunState:
    """What the named training steps hand each other (one run, one run directory)."""

    config: RunConfig
    data: Any
    split: Any
    layout: RunLayout
    device: Any
    progress: bool
    log: Callable
    metrics: dict
    started: float
    sasrec: Any = None  # the trained SASRec (its item table is stage 1 without text, and HyMiRec's id init)
    item_emb: np.ndarray | None = None  # stage 1: [n_items+1, d_item] float32
    codebook: Any = None
    codes: np.ndarray | None = None  # [n_items+1, L]
    scales: np.ndarray | None = None
    model: Any = None  # the trained HybridRecommender
    exact: Any = None  # item_emb on the device


def start_run(config: RunConfig, progress: bool = True, log=print, data=None) -> RunState:
    """Load the data and split it by ``train.protocol`` (training/protocols.py); nothing is trained yet."""
    from training.data import dataset_summary
    from training.protocols import make_split
    from training.stage2 import pick_device

    if config.hybrid.id_init == "sasrec" and not config.train_sasrec and not (
            config.stage1_from and RunLayout.at(config.stage1_from).sasrec.is_file()):
        raise ValueError("hybrid.id_init=sasrec needs a trained SASRec: set train_sasrec=true, or stage1_from= a run "
                         "directory with sasrec.pt")
    if config.train.sasrec_weights and config.train.protocol == "window":
        raise ValueError("train.sasrec_weights: saved SASRecs are trained on the leave-one-out split, not window")
    started = time.perf_counter()
    torch.manual_seed(config.train.seed)
    layout = RunLayout.at(config.run_dir).ensure()
    device = pick_device(config.train.device)
    data = data if data is not None else load_run_data(config.dataset, config.train.seed)
    summary = dataset_summary(data)
    log(f"[data] {data.name}: {summary}")
    metrics: dict = {"dataset": summary, "device": str(device), "config": config.to_dict(),
                     "protocol": config.train.protocol}
    split = make_split(data, config.train.protocol, config.train.eval_window)
    return RunState(config, data, split, layout, device, progress, log, metrics, started)


def train_baselines(state: RunState) -> None:
    """Popularity, and SASRec (also stage 1 when the dataset has no text); their test top-K lists."""
    from training.evaluate import evaluate_rankings, popularity_topk
    from training.protocols import list_window_metrics, masked_histories, next_item_view, sasrec_window_test
    from training.sasrec import SASRec, load_trained, train_sasrec

    config, split, layout, data, m = state.config, state.split, state.layout, state.data, state.metrics
    window = config.train.protocol == "window"
    if window:  # set metrics of the same lists (history masked except the targets); coverage after the codebook
        m["popularity"] = {name: list_window_metrics(
            popularity_topk(split.train, data.n_items, masked_histories(part), TOPK_LISTS), part)
            for name, part in (("valid", split.valid), ("test", split.test))}
    else:
        m["popularity"] = {
            name: evaluate_rankings(popularity_topk(split.train, data.n_items, part.histories, 50), part.targets)
            for name, part in (("valid", split.valid), ("test", split.test))}
    t0 = time.perf_counter()
    np.save(layout.topk_test_popularity, popularity_topk(split.train, data.n_items, masked_histories(split.test),
                                                         TOPK_LISTS))
    m["popularity"]["inference_ms_per_user"] = 1000 * (time.perf_counter() - t0) / max(1, len(split.test))
    np.save(layout.test_users, split.test.users.astype(np.int64))
    state.log(f"[popularity] test {m['popularity']['test']}")

    if not (config.train_sasrec or (not data.has_text and not config.stage1_from)):
        layout.topk_test_sasrec.unlink(missing_ok=True)  # never leave a previous run's lists behind
        return
    t0 = time.perf_counter()
    sas_cfg = sasrec_config(config, data.has_text)
    resume = resume_dir(state)
    done = finished_step(resume, "sasrec", config.to_dict(), RunConfig().to_dict())
    if done is not None:  # an earlier call of this paused run trained it (its test lists are on disk)
        with torch.random.fork_rng(devices=[]):  # the generator stays where that run's SASRec left it
            state.sasrec = SASRec(data.n_items, sas_cfg).to(state.device)
        state.sasrec.load_state_dict(done["model"])
        m["sasrec"] = done["record"]
        state.log(f"[sasrec] trained by an earlier call of this run: test {m['sasrec']['test']}")
        return
    layout.topk_test_sasrec.unlink(missing_ok=True)  # never leave a previous run's lists behind
    if config.train.sasrec_weights:  # trained already with these very settings (a SASRec sweep's point): loaded
        state.sasrec, trained = load_trained(config.train.sasrec_weights, data.n_items, sas_cfg,
                                             config.train.max_eval_users, state.device)
        state.log(f"[sasrec] loaded {config.train.sasrec_weights} ({trained['epochs']} epochs there)")
        valid_best, epochs, train_seconds = trained["valid_best_ndcg10"], trained["epochs"], trained["train_seconds"]
    else:
        state.sasrec, sas_hist = train_sasrec(split.train, data.n_items, next_item_view(split.valid), sas_cfg,
                                              state.device, state.progress, state.log, config.train.max_eval_users,
                                              checkpoint=resume and resume / "sasrec.ckpt",
                                              pause_after=pause_left(state))
        if sas_hist.get("paused"):
            raise RunPaused(f"SASRec paused after epoch {len(sas_hist['epochs'])}; the same command resumes it")
        # a paused run's every call: the epochs' seconds (validation included); otherwise this one's wall time
        train_seconds = time.perf_counter() - t0 if resume is None else sum(e["seconds"] for e in sas_hist["epochs"])
        valid_best, epochs = sas_hist["best_valid_ndcg10"], len(sas_hist["epochs"])
    if window:
        test, topk, infer_seconds = sasrec_window_test(state.sasrec, split.test)
    else:
        test, topk, infer_seconds = sasrec_test(state.sasrec, split.test)
    np.save(layout.topk_test_sasrec, topk)
    m["sasrec"] = {"valid_best_ndcg10": valid_best, "test": test, "train_seconds": train_seconds, "epochs": epochs,
                   **({"loaded_from": config.train.sasrec_weights} if config.train.sasrec_weights else {}),
                   "inference_ms_per_user": 1000 * infer_seconds / max(1, len(split.test))}
    torch.save(state.sasrec.state_dict(), layout.sasrec)
    keep_finished_step(resume, "sasrec", config.to_dict(), m["sasrec"], model=state.sasrec.state_dict())
    state.log(f"[sasrec] test {m['sasrec']['test']}")


def train_stage1(state: RunState) -> None:
    """Item embeddings, frozen afterwards: reused from ``stage1_from``, the content encoder, or SASRec's id table."""
    config, data, m = state.config, state.data, state.metrics
    t0 = time.perf_counter()
    done = finished_step(resume_dir(state), "stage1", config.to_dict(), RunConfig().to_dict())
    if done is not None:  # an earlier call of this paused run made it
        item_emb, m["item_representation"] = done["item_emb"].numpy(), done["record"]
    elif config.stage1_from:
        item_emb, m["item_representation"] = reuse_stage1(config, data.n_items, state.log)
    elif data.has_text:
        item_emb, _, m["item_representation"] = content_item_embeddings(config, data, state.split.train, state.device,
                                                                        state.progress, state.log)
    else:
        weights = state.sasrec.item_emb.weight.detach().float().cpu().numpy()
        item_emb = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-8)
        item_emb[0] = 0
        m["item_representation"] = {
            "kind": "item_id_embedding", "note": "dataset has no item text: learned item-id embedding "
            "(SASRec next-item training) used in place of the content encoder"}
        state.log("[stage 1] no item text: using a learned item-id embedding (flagged in metrics.json)")
    state.item_emb = item_emb.astype(np.float32)
    m["stage1_seconds"] = time.perf_counter() - t0
    if done is None:
        keep_finished_step(resume_dir(state), "stage1", config.to_dict(), m["item_representation"],
                           item_emb=torch.from_numpy(state.item_emb))


def fit_run_codebook(state: RunState) -> None:
    """The cosine residual codebook over the item pool: the long history is stored and fetched as codes."""
    t0 = time.perf_counter()
    state.codebook, state.codes, state.scales = fit_codebook(state.item_emb, state.config.codebook,
                                                             state.config.train.seed, state.log)
    report = {**state.codebook.report(state.item_emb[1:]), "fit_seconds": time.perf_counter() - t0}
    state.metrics["codebook"] = report
    state.log(f"[codebook] {json.dumps({k: v for k, v in report.items() if not isinstance(v, (dict, list))})}")


def train_stage2(state: RunState) -> None:
    """The hybrid recommender (lightweight + LLM recommender, DMIL) on the frozen items; its test lists."""
    from training.hybrid import HybridRecommender
    from training.protocols import hybrid_window_test, rescore_baselines, window_labels
    from training.stage2 import train_hybrid

    config, split, device = state.config, state.split, state.device
    t0 = time.perf_counter()
    tables = hybrid_item_tables(state.item_emb, state.codebook, state.codes, config.hybrid.use_codebook, device)
    state.exact = tables.exact
    model = HybridRecommender(config.hybrid, state.item_emb.shape[1], state.data.n_items).to(device)
    if config.hybrid.id_init == "sasrec":
        state.metrics["id_init"] = init_ids_from_sasrec(model, config, state.sasrec, state.log)
    resume = resume_dir(state)
    history = train_hybrid(model, tables, split.train, split.valid, config.hybrid, config.train, state.progress,
                           state.log, checkpoint=resume and resume / "stage2.ckpt", pause_after=pause_left(state))
    if history.get("paused"):
        raise RunPaused(f"stage 2 paused after epoch {len(history['epochs'])}; the same command resumes it")
    train_seconds = time.perf_counter() - t0 if resume is None else sum(e["seconds"] for e in history["epochs"])
    window = config.train.protocol == "window"
    if window:  # interests once, both merges, coverage against the interest labels
        labels = window_labels(state)
        test, quota, topk, infer_seconds = hybrid_window_test(model, tables, split.test, labels.matrix,
                                                              state.item_emb, config.train.eval_batch)
    else:
        test, topk, infer_seconds = hybrid_test(model, tables, split.test, config.train.eval_batch)
    np.save(state.layout.topk_test_hymirec, topk)
    per_user_ms = 1000 * infer_seconds / max(1, len(split.test.targets))
    state.metrics["hymirec"] = {"valid_best_ndcg10": history["best_valid_ndcg10"], "test": test,
                                "valid_metric": history["valid_metric"], "valid_best": history["best_valid"],
                                "train_seconds": train_seconds, "inference_ms_per_user": per_user_ms,
                                "epochs": len(history["epochs"]), "history": history["epochs"]}
    state.model = model
    if window:
        state.metrics["hymirec"]["test_quota"] = quota
        rescore_baselines(state, labels)
    state.log(f"[hymirec] test {test}")


def write_run(state: RunState) -> None:
    """Every artifact serving and export read (core/artifacts.py RunLayout), config and metrics last."""
    from training.data import dataset_summary

    layout, data, model, config = state.layout, state.data, state.model, state.config
    counts = np.bincount(np.concatenate(state.split.train), minlength=data.n_items + 1).astype(np.int64)
    counts[0] = 0
    np.save(layout.item_embeddings, state.item_emb)
    np.save(layout.item_vectors, model.item_vectors(state.exact).float().cpu().numpy())
    np.save(layout.recent_item_embeddings, model.recent_table(state.exact).float().cpu().numpy())
    np.save(layout.item_popularity, counts)
    np.save(layout.item_codes, state.codes)
    np.save(layout.item_scales, state.scales)
    state.codebook.save(layout.codebook)
    torch.save({"state_dict": model.state_dict(), "item_dim": int(state.item_emb.shape[1]), "n_items": data.n_items,
                "hybrid": config.to_dict()["hybrid"]}, layout.model)
    write_json_atomic(layout.item_ids, data.item_ids)
    write_json_atomic(layout.item_titles, item_texts_or_ids(data) if data.has_text else [""] * len(data.item_ids))
    write_json_atomic(layout.dataset, dataset_summary(data))
    write_json_atomic(layout.config, config.to_dict())
    state.metrics["total_seconds"] = time.perf_counter() - state.started  # a paused run's: its last call's
    write_json_atomic(layout.metrics, state.metrics)
    shutil.rmtree(layout.root / RESUME_DIR, ignore_errors=True)  # the run is whole: nothing left to resume


# The run, in order. The CLI, the quality bench and the retrain DAG all train through run_training.
TRAINING_STEPS: tuple[Callable[[RunState], None], ...] = (
    train_baselines, train_stage1, fit_run_codebook, train_stage2, write_run)


def run_training(config: RunConfig, progress: bool = True, log=print, data=None) -> dict:
    """The whole run into ``config.run_dir``: :data:`TRAINING_STEPS` in order; returns metrics.json's content.

    ``data``: an already loaded InteractionData of ``config.dataset`` (the quality bench passes the one it
    exported the peer split from, so every seed and ablation trains on the very same data).
    """
    state = start_run(config, progress, log, data)
    for step in TRAINING_STEPS:
        step(state)
    return state.metrics


def load_hybrid(run_dir: str, device: str = "cpu"):
    """Rebuild the trained HybridRecommender from a run directory (for export and ablations)."""
    from training.config import HybridConfig, build_dataclass
    from training.hybrid import HybridRecommender

    # weights_only: model.pt comes from a shared volume and a full unpickle would run any code put in it; the
    # record holds tensors and plain types only (state_dict, sizes, the hybrid config as a dict).
    saved = torch.load(RunLayout.at(run_dir).model, map_location=device, weights_only=True)
    model = HybridRecommender(build_dataclass(HybridConfig, saved["hybrid"], "hybrid."), saved["item_dim"],
                              saved["n_items"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def sasrec_config(config: RunConfig, has_text: bool) -> SASRecConfig:
    """The run's SASRec baseline settings (train.sasrec_*); its width is the id tables' where it is the stage 1."""
    from training.sasrec import SASRecConfig

    t = config.train
    return SASRecConfig(dim=config.item_encoder.id_embedding_dim if not has_text else 64, epochs=t.sasrec_epochs,
                        lr=t.sasrec_lr, dropout=t.sasrec_dropout, batch_size=t.sasrec_batch_size,
                        patience=t.sasrec_patience, attn_dropout=t.sasrec_attn_dropout, post_ln=t.sasrec_post_ln,
                        input_norm=t.sasrec_input_norm, train_stride=t.sasrec_train_stride,
                        positions_from_start=t.sasrec_positions_from_start, seed=t.seed,
                        max_train_seconds=t.max_train_seconds)


def load_trained_run(run_dir: str | Path):
    """(state, item_emb [n+1, d], tables, model) of a finished run as its training left them; ``state`` holds its data
    and split (for re-scoring a run: bench/interest_diagnostics.py, bench/heldout_users.py)."""
    from features.codebook import ResidualCodebook

    layout = RunLayout.at(run_dir)
    if not layout.model.is_file():
        raise FileNotFoundError(f"{run_dir}: no model.pt (an unfinished or missing run)")
    config = RunConfig.load(layout.config)
    state = start_run(config, progress=False, log=lambda *_: None)
    item_emb = np.load(layout.item_embeddings)
    state.codes = np.load(layout.item_codes)
    tables = hybrid_item_tables(item_emb, ResidualCodebook.load(layout.codebook), state.codes,
                                config.hybrid.use_codebook)
    return state, item_emb, tables, load_hybrid(str(run_dir))
