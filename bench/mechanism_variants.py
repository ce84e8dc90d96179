"""The mechanisms bench's variants and suites (bench/mechanisms.py runs them, bench/mechanisms_report.py reads them).

A variant is a list of config overrides on the bench preset, differing from its base in one setting; a suite names,
per protocol, the variants one `run` trains; the *_CANDIDATES tuples are what the report chooses among on validation.
"""
from __future__ import annotations

from bench.methods import DIM, MULTI_INTEREST

LONG = ["hybrid.long_len=1024", "hybrid.long_window=older"]
ONE_RULE = ["train.patience=10", "train.sasrec_patience=10", "train.epochs=200", "train.sasrec_epochs=200",
            f"hybrid.out_dim={DIM}", f"item_encoder.id_embedding_dim={DIM}", "hybrid.recent_n=50",
            # early stopping reads every validation user, as the SASRec sweep and the peer libraries do (the
            # preset's 3,000 is the equal-budget bench's speed cap; it never bound on the ≤ 1,000-user ML sets)
            "train.max_eval_users=null"]
# items from their stage-1 text embeddings alone: no id table in the item tower nor for the recent items
TEXT_ONLY = ["hybrid.item_id_residual=false", "hybrid.recent_id_embedding=false", "hybrid.id_init=zeros"]
# K = 1 with the multi-interest training (W = 10 windows, DMIL + dense loss, no anchor): differs from k3 in K only
K1_SAME_TRAINING = [o for o in MULTI_INTEREST if not o.startswith("hybrid.n_interests")] + ["hybrid.n_interests=1"]
VARIANTS: dict[str, list[str]] = {
    "k1": K1_SAME_TRAINING,
    "k3": list(MULTI_INTEREST),
    "k3-recent-only": list(MULTI_INTEREST) + ["hybrid.use_lightweight=false"],
    "k3-exact": list(MULTI_INTEREST) + ["hybrid.use_codebook=false"],
    # the same two settings on K = 1 (the steer suite's converged runs): no lightweight recommender; exact embeddings
    "k1-recent-only": K1_SAME_TRAINING + ["hybrid.use_lightweight=false"],
    "k1-exact": K1_SAME_TRAINING + ["hybrid.use_codebook=false"],
    # How the window targets train the queries (training/dmil.py), one setting each on top of k3
    "k3-nearest": list(MULTI_INTEREST) + ["hybrid.interest_routing=nearest"],
    "k3-holistic": list(MULTI_INTEREST) + ["hybrid.holistic_interest=true"],
    # residual interests: the first query as K = 1's (every target), the other two only on the targets it ranks
    # below 50 (hybrid.residual_rank), each such target to the nearer of the two
    "k3-residual": list(MULTI_INTEREST) + ["hybrid.holistic_interest=true", "hybrid.residual_rank=50",
                                           "hybrid.interest_routing=nearest"],
    "k3-maxloss": list(MULTI_INTEREST) + ["hybrid.max_merge_weight=1.0"],
    "k5-maxloss": [o for o in MULTI_INTEREST if not o.startswith("hybrid.n_interests")]
    + ["hybrid.n_interests=5", "hybrid.max_merge_weight=1.0"],
    # the queries trained only through the served max-merge score (no routing): a softmax over max_k cos(u_k, item)
    "k3-maxonly": list(MULTI_INTEREST) + ["hybrid.max_merge_weight=1.0", "hybrid.dmil_weight=0"],
    "k5-maxonly": [o for o in MULTI_INTEREST if not o.startswith("hybrid.n_interests")]
    + ["hybrid.n_interests=5", "hybrid.max_merge_weight=1.0", "hybrid.dmil_weight=0"],
    "k3-softonly": list(MULTI_INTEREST) + ["hybrid.max_merge_weight=1.0", "hybrid.dmil_weight=0",
                                           "hybrid.max_merge_softness=0.05"],
    # each interest query seeded by one of K groups of the user's recent items (hybrid.llm.query_seeds)
    "k3-seeded": list(MULTI_INTEREST) + ["hybrid.llm.query_seeds=recent_clusters"],
    "k5-seeded": [o for o in MULTI_INTEREST if not o.startswith("hybrid.n_interests")]
    + ["hybrid.n_interests=5", "hybrid.llm.query_seeds=recent_clusters"],
    "k3-seeded-maxloss": list(MULTI_INTEREST) + ["hybrid.llm.query_seeds=recent_clusters",
                                                 "hybrid.max_merge_weight=1.0"],
    "preset": LONG,  # the leave-one-out bench's own configuration (K = 1, anchored), with the long history
    # the same without the lightweight recommender (no long coded history): the leave-one-out half of issue 25's check
    "preset-recent-only": LONG + ["hybrid.use_lightweight=false"],
    # the same without the warm start: id tables from zero, not from the run's SASRec (the quality ablation's way)
    "preset-ids-from-scratch": LONG + ["hybrid.id_init=zeros"],
    # id tables learnt from zero may want SASRec's learning rate rather than the warm-started preset's 2e-4 (on the ML-1M
    # cut the 2e-4 run's validation was still climbing when patience stopped it): a candidate, chosen on validation
    "preset-ids-from-scratch-lr0.001": LONG + ["hybrid.id_init=zeros", "train.lr=0.001"],
    # Items from their text alone, as the paper has them: no id table anywhere (neither the item tower's residual nor
    # the recent items'), so nothing to warm-start from SASRec; at the preset's learning rate and at SASRec's
    "preset-text-only": LONG + TEXT_ONLY,
    "preset-text-only-lr0.001": LONG + TEXT_ONLY + ["train.lr=0.001"],
    # The preset with more dropout everywhere it has some (recent-item inputs, the backbone's attention and head, the
    # item tower's head, the lightweight recommender): candidates for HyMiRec's regularisation, chosen on validation
    # (report: HYMIREC_CANDIDATES). On Beauty the preset's best validation came at epoch 4 of 14, then its training
    # loss fell on while validation fell too; the SASRec sweep there chose dropout 0.5 over 0.2.
    **{f"preset-dropout{p}": LONG + [f"hybrid.llm.input_dropout={p}", f"hybrid.llm.dropout={p}",
                                     f"hybrid.item_tower_dropout={p}", f"hybrid.lightweight.dropout={p}"]
       for p in (0.3, 0.5)},
    # The LLM recommender's backbone: SmolLM2-135M's first 4 of 30 layers (CPU-sized; width 576) pretrained, the same
    # shape freshly initialised, against the preset's default (a 2-layer, 128-wide Qwen2 trained from scratch).
    # The backbone learns at 1e-4 (the layers around it at the preset's rate), so fine-tuning keeps what it knows.
    "smollm2-4": LONG + ["hybrid.llm.path=smollm2", "hybrid.llm.keep_layers=4", "hybrid.llm.lr=0.0001"],
    "smollm2-4-random": LONG + ["hybrid.llm.path=smollm2", "hybrid.llm.keep_layers=4", "hybrid.llm.lr=0.0001",
                                "hybrid.llm.init=random"],
    # The same pretrained layers kept as they are, only rank-8 LoRA adapters on attention training (peft): fully
    # fine-tuned, both 576-wide backbones overfit ML-100K from epoch ~11 (docs/results-notes.md); a frozen trunk can
    # keep what pretraining knows at a fraction of the trainable weights.
    "smollm2-4-lora": LONG + ["hybrid.llm.path=smollm2", "hybrid.llm.keep_layers=4", "hybrid.llm.lr=0.0001",
                              "hybrid.llm.finetune=lora"],
}
# The chosen dropout candidate trained on SASRec's winning instances (training/batches.strided_cuts): a cut every s
# items, the dense loss on each cut's last s positions, so every item is a label once an epoch with ≥ 50 - s + 1
# recent items before it (the random cuts' dense loss gives the first positions of a window almost none). On ML-100K
# that change took our SASRec from 0.1230 to 0.1392 validation; HyMiRec's random cuts validated 0.1351 on its warm start
# (strided, no better: docs/results-notes.md). Batches of similar long-history lengths (train.length_buckets) make
# them ~2× cheaper to train (ML-100K, stride 5: 159 s an epoch against 356 s).
for _s in (1, 5, 10):
    VARIANTS[f"preset-dropout0.3-stride{_s}"] = VARIANTS["preset-dropout0.3"] + [f"hybrid.train_stride={_s}",
                                                                               "train.length_buckets=50"]
SUITES = {
    "mechanisms": {"window": ["k1", "k3", "k3-recent-only", "k3-exact"],
                   "leave_one_out": ["preset", "k1", "k3", "k3-recent-only"]},
    "llm": {"leave_one_out": ["preset", "smollm2-4", "smollm2-4-random", "smollm2-4-lora"]},
    # how the window targets train the K queries: the paper's balanced DMIL against the alternatives
    "interests": {"window": ["k1", "k3", "k3-nearest", "k3-holistic", "k3-maxloss", "k5-maxloss"],
                  "leave_one_out": ["k1", "k3", "k3-maxloss", "k5-maxloss"]},
}
# the K queries trained through the served max-merge score alone (hard and smooth), or seeded by recent tastes
SUITES["maxmerge"] = {"window": ["k1", "k3-maxonly", "k5-maxonly", "k3-softonly", "k3-seeded", "k5-seeded"],
                      "leave_one_out": ["preset"]}
# K = 1 on the window protocol, to its own early stop (SASRec too): `headroom` then scores its interest tilted
# toward the user's history clusters (bench/interest_diagnostics.steered_choice), K > 1 without training; and K = 1
# without the long coded history, with exact embeddings instead of codes, and K = 3 residual interests (trained on
# what the first interest misses), each to its own early stop
SUITES["steer"] = {"window": ["k1", "k1-recent-only", "k1-exact", "k3-residual"]}
# the long coded history against recent items only under leave-one-out, both to their own early stop (the window
# half is the steer suite's k1 against k1-recent-only)
SUITES["long-loo"] = {"leave_one_out": ["preset", "preset-recent-only"]}
# each model to its own early stop (patience 10, no epoch cap that binds): HyMiRec's preset against our SASRec
SUITES["converged"] = {"leave_one_out": ["preset", "preset-ids-from-scratch"]}
# the preset alone, warm-started from another SASRec: a candidate for report --warm-start-from
SUITES["warm-start"] = {"leave_one_out": ["preset"]}
# the preset's dropout candidates, each stage 2 alone on a finished base run (`run --variant`, the base's SASRec)
SUITES["dropout"] = {"leave_one_out": ["preset", "preset-dropout0.3", "preset-dropout0.5"]}
# HyMiRec's rivals for "the preset" on validation beside it (report: bench/converged_view.hymirec_choice)
HYMIREC_CANDIDATES = ("preset-dropout0.3", "preset-dropout0.5", "preset-dropout0.3-stride1",
                      "preset-dropout0.3-stride5", "preset-dropout0.3-stride10",
                      # the pretrained backbone and its control (`run --suite llm --variant V --sasrec-from`)
                      "smollm2-4", "smollm2-4-random", "smollm2-4-lora")
# the strided candidates, each stage 2 alone beside a finished run (`run --suite stride --variant V --sasrec-from`)
SUITES["stride"] = {"leave_one_out": ["preset", "preset-dropout0.3-stride1", "preset-dropout0.3-stride5",
                                      "preset-dropout0.3-stride10"]}
# and for "ids from scratch" (`run --suite scratch-lr --variant preset-ids-from-scratch-lr0.001` beside a converged run)
SCRATCH_CANDIDATES = ("preset-ids-from-scratch", "preset-ids-from-scratch-lr0.001")
SUITES["scratch-lr"] = {"leave_one_out": ["preset", "preset-ids-from-scratch-lr0.001"]}
# and for "text only" (`run --suite text-only --variant V`, each beside a converged run; needs item text)
TEXT_CANDIDATES = ("preset-text-only", "preset-text-only-lr0.001")
SUITES["text-only"] = {"leave_one_out": ["preset", *TEXT_CANDIDATES]}
# The K ≥ 3 trainings that compete for "the multi-interest model"; the report picks one on validation Recall@50
MULTI_CANDIDATES = ("k3", "k3-nearest", "k3-holistic", "k3-residual", "k3-maxloss", "k5-maxloss", "k3-maxonly",
                    "k5-maxonly", "k3-seeded", "k5-seeded", "k3-seeded-maxloss", "k3-softonly")
# --quick: the comparisons issue 25 asks for, on a CPU budget (no long-vs-recent row under leave-one-out)
SUITES["quick"] = {"window": SUITES["mechanisms"]["window"], "leave_one_out": ["preset", "k1", "k3"]}
BASE = {"window": "k1", "leave_one_out": "preset"}  # the variant each protocol's base run trains
