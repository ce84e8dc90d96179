"""torch-rechub peer runner (docs/peers.md): ComiRec-SA and MIND on a HyMiRec peer split.

Standalone: runs in .venv-peers/rechub and talks to the project only through files.

    python bench/peers/rechub/run.py --split DIR --out DIR --model {comirec_sa,mind} \
        --epochs E --time-budget SECONDS --seed S --dim 64 --max-len 50 --topk 100

Training follows the library's own MovieLens examples for these models (every prefix of a user's sequence -> next
item, as generate_seq_feature_match builds them; MatchTrainer mode=2: softmax over [positive, negatives]; features
user_id + hist sequence + item id + neg_items, the last three sharing one item table), with these deviations, all
recorded in result.json:
  * 100 uniform negatives redrawn every epoch, never the positive (examples: 3 drawn once by popularity**0.75);
  * the logits are divided by ``temperature``: both models store it but their forward() never applies it, so the
    softmax would run on cosines in [-1, 1] and learn slowly;
  * MIND's embeddings start at N(0, 0.1) instead of N(0, 1e-4) (see INIT_STD).
valid.tsv picks the epoch (best NDCG@10, patience); test lists use the history train + valid.

Resuming (docs/peers.md, "Long runs"): after every epoch the runner writes OUT/checkpoint.pt (weights, optimizer,
validation history, best weights, every random generator), atomically. ``--pause-after S`` stops at the first epoch
end past S seconds of this call and exits 75, keeping it; the same command goes on from there, and the result
equals an uninterrupted run's. A checkpoint made on another split or with other settings is refused by name.
"""
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # MatchTrainer wraps every loop in tqdm: keep the logs readable

import argparse
import copy
import json
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from torch_rechub.basic.features import SequenceFeature, SparseFeature
from torch_rechub.basic.initializers import RandomNormal
from torch_rechub.models.matching import MIND, ComirecSA
from torch_rechub.trainers import MatchTrainer
from torch_rechub.utils.data import TorchDataset

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))  # run_state.py: stdlib only
from run_state import EXIT_PAUSED, CheckpointRefused, LoopCheckpoint, run_fingerprint, say_paused  # noqa: E402

HEADER = ["user_id", "item_id", "timestamp"]
MODELS = {"comirec_sa": ComirecSA, "mind": MIND}
# Embedding init std. ComiRec-SA keeps the library default N(0, 1e-4). MIND's routing logits start from N(0, 1)
# noise and are updated by dot products of the (tiny) mapped item vectors, so with 1e-4 the routing never leaves
# its random start and the interests are noisy random mixtures (ML-100K, 10 epochs, NDCG@10: 1e-4 0.041, 0.1 0.053,
# 1.0 0.036; ComiRec-SA: 1e-4 0.052, 0.1 0.042).
INIT_STD = {"comirec_sa": 1e-4, "mind": 0.1}


class PeerError(Exception):
    pass


def read_split(split):
    """→ (n_users, n_items, train_seqs {user: int64 items in time order}, valid {user: item}, test users in order)."""
    try:
        with open(os.path.join(split, "manifest.json")) as f:
            manifest = json.load(f)
        n_users, n_items = int(manifest["n_users"]), int(manifest["n_items"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PeerError(f"bad split directory {split!r}: manifest.json unreadable ({e})")
    tables = {}
    for name in ("train", "valid", "test"):
        path = os.path.join(split, f"{name}.tsv")
        try:
            with open(path) as f:
                header = f.readline().rstrip("\n").split("\t")
            rows = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64, ndmin=2).reshape(-1, 3)
        except (OSError, ValueError) as e:
            raise PeerError(f"bad split directory {split!r}: {name}.tsv unreadable ({e})")
        if header != HEADER:
            raise PeerError(f"bad split directory {split!r}: {name}.tsv header {header} != {HEADER}")
        if len(rows) and (rows[:, 0].min() < 0 or rows[:, 0].max() >= n_users
                          or rows[:, 1].min() < 1 or rows[:, 1].max() > n_items):
            raise PeerError(f"bad split directory {split!r}: {name}.tsv has ids outside the manifest's ranges")
        tables[name] = rows
    train = tables["train"][np.lexsort((tables["train"][:, 2], tables["train"][:, 0]))]
    users, starts = np.unique(train[:, 0], return_index=True)
    seqs = dict(zip(users.tolist(), np.split(train[:, 1], starts[1:])))
    valid = dict(zip(tables["valid"][:, 0].tolist(), tables["valid"][:, 1].tolist()))
    test_users = tables["test"][:, 0]
    if len(test_users) == 0 or len(set(test_users.tolist())) != len(test_users):
        raise PeerError(f"bad split directory {split!r}: test.tsv is empty or lists a user twice")
    return n_users, n_items, seqs, valid, test_users


def pad_history(hist, max_len):
    """Last ``max_len`` items, left-aligned and 0-padded after (the examples' padding='post');
    both models mask padding (item id 0) and have no position embeddings, so only *which* items matters."""
    out = np.zeros(max_len, dtype=np.int64)
    hist = hist[-max_len:]
    out[: len(hist)] = hist
    return out


def training_samples(seqs, max_len):
    """Every prefix of every train sequence → its next item (users with a single train item give none)."""
    users, hists, targets = [], [], []
    for u, seq in seqs.items():
        for t in range(1, len(seq)):
            users.append(u)
            hists.append(pad_history(seq[:t], max_len))
            targets.append(seq[t])
    if not users:
        raise PeerError("train.tsv has no user with two or more interactions: nothing to train on")
    return np.array(users, dtype=np.int64), np.stack(hists), np.array(targets, dtype=np.int64)


def sample_negatives(targets, n_neg, n_items, rng):
    """Uniform negatives over all items, redrawn until none equals its row's positive. (Uniform, not the examples'
    popularity**0.75: that scored NDCG@10 0.013 vs 0.044 after 3 ComiRec-SA epochs on ML-100K.)"""
    neg = rng.integers(1, n_items + 1, size=(len(targets), n_neg))
    while True:
        clash = neg == targets[:, None]
        if not clash.any():
            return neg
        neg[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))


def with_temperature(cls):
    """The library model, with its (stored but unused) ``temperature`` applied to the training logits."""

    class Tempered(cls):
        def forward(self, x):
            out = super().forward(x)
            return out if self.mode in ("user", "item") else out / self.temperature

    Tempered.__name__ = cls.__name__
    return Tempered


@torch.no_grad()
def rank_top(model, users, hists, exclude, n_items, topk, batch=512):
    """Exact full ranking: each item's score is its best dot product over the user's K interest vectors.
    ``exclude[i]`` are item ids never returned for row i. → int64 [len(users), topk], 0-padded."""
    model.eval()
    model.mode = "item"
    items = model({"item_id": torch.arange(1, n_items + 1)})  # [N, D], row j = item j+1
    model.mode = "user"
    out = np.zeros((len(users), topk), dtype=np.int64)
    k = min(topk, n_items)
    for s in range(0, len(users), batch):
        x = {"user_id": torch.from_numpy(users[s:s + batch]), "hist_item_id": torch.from_numpy(hists[s:s + batch])}
        interests = model(x)  # [B, K, D]
        scores = torch.einsum("bkd,nd->bkn", interests, items).amax(dim=1)
        for i, ex in enumerate(exclude[s:s + batch]):
            scores[i, torch.as_tensor(np.asarray(ex, dtype=np.int64)) - 1] = -torch.inf
        val, idx = scores.topk(k, dim=1)
        ids = (idx + 1).masked_fill(torch.isinf(val), 0)  # fewer unseen items than topk: pad with 0
        out[s:s + batch, :k] = ids.numpy()
    model.mode = None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--time-budget", type=float, default=None)  # omitted: no budget
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--topk", type=int, default=100)
    # Not part of the contract: the model's own knobs, defaults from the library's examples where they give one.
    p.add_argument("--interest-num", type=int, default=4)  # library default
    p.add_argument("--negatives", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.2)  # 0.05: 0.037, 0.2: 0.044 (SA, 3 ep)
    p.add_argument("--lr", type=float, default=1e-3)  # example value
    p.add_argument("--weight-decay", type=float, default=1e-6)  # example value
    p.add_argument("--batch-size", type=int, default=256)  # example value
    p.add_argument("--init-std", type=float, default=None, help="embedding init std (default: per model, see INIT_STD)")
    p.add_argument("--patience", type=int, default=5, help="epochs without valid NDCG@10 gain before stopping")
    p.add_argument("--pause-after", type=float, default=None,
                   help="stop at the first epoch end past this many seconds, keep OUT/checkpoint.pt, exit 75")
    a = p.parse_args(argv)
    if a.model not in MODELS:
        raise PeerError(f"unknown model {a.model!r}: expected one of {sorted(MODELS)}")
    for name in ("epochs", "dim", "max_len", "topk", "interest_num", "negatives", "batch_size", "patience"):
        if getattr(a, name) < 1:
            raise PeerError(f"--{name.replace('_', '-')} must be >= 1")
    bad_budget = a.time_budget is not None and a.time_budget <= 0
    if bad_budget or a.temperature <= 0 or (a.init_std is not None and a.init_std <= 0):
        raise PeerError("--time-budget, --temperature and --init-std must be > 0")
    if a.pause_after is not None and a.pause_after < 0:
        raise PeerError("--pause-after must be >= 0")

    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    n_users, n_items, seqs, valid, test_users = read_split(a.split)
    empty = np.zeros(0, dtype=np.int64)
    tr_users, tr_hists, tr_targets = training_samples(seqs, a.max_len)

    # The examples' feature layout: the history and the negatives share the item table ("item_id").
    D, L = a.dim, a.max_len
    init = RandomNormal(0.0, a.init_std if a.init_std is not None else INIT_STD[a.model])
    user_f = [SparseFeature("user_id", vocab_size=n_users, embed_dim=D, initializer=init)]
    item_f = [SparseFeature("item_id", vocab_size=n_items + 1, embed_dim=D, padding_idx=0, initializer=init)]
    hist_f = [SequenceFeature("hist_item_id", vocab_size=n_items + 1, embed_dim=D, pooling="concat", shared_with="item_id")]
    neg_f = [SequenceFeature("neg_items", vocab_size=n_items + 1, embed_dim=D, pooling="concat", shared_with="item_id")]
    cls = with_temperature(MODELS[a.model])
    if a.model == "mind":
        model = cls(user_f, hist_f, item_f, neg_f, max_length=L, temperature=a.temperature, interest_num=a.interest_num)
    else:
        model = cls(user_f, hist_f, item_f, neg_f, temperature=a.temperature, interest_num=a.interest_num)
    trainer = MatchTrainer(model, mode=2, optimizer_params={"lr": a.lr, "weight_decay": a.weight_decay},
                           n_epoch=a.epochs, device="cpu", model_path=a.out)

    # Model selection on valid.tsv (history = train only, train items masked): best NDCG@10 over epochs.
    v_users = np.array([u for u in valid if u in seqs], dtype=np.int64)
    v_hists = np.stack([pad_history(seqs[u], L) for u in v_users]) if len(v_users) else None
    v_targets = np.array([valid[u] for u in v_users], dtype=np.int64)
    gen = torch.Generator().manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    checkpoint = LoopCheckpoint(Path(a.out) / "checkpoint.pt", run_fingerprint(
        a, "model", "seed", "dim", "max_len", "interest_num", "negatives", "temperature", "lr", "weight_decay",
        "batch_size", "init_std", "patience"))
    loop = checkpoint.load(model, trainer.optimizer, gen, numpy_generator=rng) or {
        "best": (-1.0, 0, None), "log": [], "epoch_times": [], "train_seconds": 0.0}  # best: (NDCG@10, epoch, weights)
    best, log, epoch_times = loop["best"], loop["log"], loop["epoch_times"]
    epochs_run = epochs_at_start = len(log)
    if epochs_run:
        print(f"[rechub {a.model}] resumed after epoch {epochs_run} (best {best[0]:.5f} at {best[1]})",
              file=sys.stderr, flush=True)
    t0, started = time.perf_counter() - loop["train_seconds"], time.perf_counter()  # the run's, this call's

    def finished():
        over_budget = a.time_budget is not None and time.perf_counter() - t0 >= a.time_budget
        stalled = v_hists is not None and epochs_run and epochs_run - best[1] >= a.patience
        return epochs_run >= a.epochs or over_budget or stalled

    while not finished():
        if a.pause_after is not None and epochs_run > epochs_at_start \
                and time.perf_counter() - started >= a.pause_after:
            say_paused("rechub", checkpoint.path, time.perf_counter() - started, epochs_run)
            return EXIT_PAUSED  # the checkpoint of the last epoch stays
        te = time.perf_counter()
        x = {"user_id": torch.from_numpy(tr_users), "hist_item_id": torch.from_numpy(tr_hists),
             "item_id": torch.from_numpy(tr_targets),
             "neg_items": torch.from_numpy(sample_negatives(tr_targets, a.negatives, n_items, rng))}
        y = torch.zeros(len(tr_targets), dtype=torch.long)  # label 0: the positive is the first logit
        # The library's dataset, indexed a whole batch at a time (its per-sample collate costs ~2 s an epoch).
        ds = TorchDataset(x, y)
        dl = DataLoader(ds, sampler=BatchSampler(RandomSampler(ds, generator=gen), a.batch_size, False), batch_size=None)
        loss = trainer.train_one_epoch(dl)
        epochs_run += 1
        epoch_times.append(time.perf_counter() - te)
        entry = {"epoch": epochs_run, "loss": round(float(loss), 5), "seconds": round(epoch_times[-1], 2)}
        if v_hists is not None:
            with torch.random.fork_rng():  # same MIND routing noise every epoch; training RNG untouched
                torch.manual_seed(a.seed)
                top = rank_top(model, v_users, v_hists, [seqs[u] for u in v_users], n_items, 10)
            hit = top == v_targets[:, None]
            ndcg = float((hit / np.log2(np.arange(2, 12))).sum(1).mean())
            entry["valid_ndcg10"] = round(ndcg, 5)
            if ndcg > best[0]:
                best = (ndcg, epochs_run, copy.deepcopy(model.state_dict()))
        log.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)
        checkpoint.save(model, trainer.optimizer, gen, {"best": best, "log": log, "epoch_times": epoch_times,
                                                         "train_seconds": time.perf_counter() - t0},
                        numpy_generator=rng)
    if best[2] is not None:
        model.load_state_dict(best[2])
    train_seconds = time.perf_counter() - t0

    # Test: history = train + valid (valid last), history items never recommended.
    t1 = time.perf_counter()
    hists = [np.append(seqs.get(u, empty), [valid[u]] if u in valid else empty) for u in test_users.tolist()]
    torch.manual_seed(a.seed)  # MIND's routing starts from random logits (randn): fixed for reproducible lists
    top = rank_top(model, test_users, np.stack([pad_history(h, L) for h in hists]), hists, n_items, a.topk)
    infer_seconds = time.perf_counter() - t1

    np.save(os.path.join(a.out, "topk_test.npy"), top)
    result = {
        "library": "torch-rechub", "version": version("torch-rechub"), "model": a.model,
        "epochs_run": epochs_run, "train_seconds": round(train_seconds, 3), "infer_seconds": round(infer_seconds, 3),
        "n_test_users": int(len(test_users)),
        "params": {"dim": D, "max_len": L, "interest_num": a.interest_num, "negatives": a.negatives,
                   "negative_sampler": "uniform, redrawn per epoch, != positive", "temperature": a.temperature,
                   "init_std": init.std,
                   "loss": "softmax CE over [pos, negatives] (MatchTrainer mode=2)", "optimizer": "Adam",
                   "lr": a.lr, "weight_decay": a.weight_decay, "batch_size": a.batch_size,
                   "epochs_cap": a.epochs, "time_budget": a.time_budget, "patience": a.patience, "seed": a.seed,
                   "resumed": checkpoint.resumed,
                   "user_features": ["user_id"], "train_samples": int(len(tr_targets)), "torch": torch.__version__},
        "best_epoch": best[1], "best_valid_ndcg10": round(best[0], 5) if best[2] is not None else None,
        "epoch_seconds_mean": round(float(np.mean(epoch_times)), 3), "epochs": log,
        "notes": ("torch-rechub %s MatchTrainer list-wise training; every train prefix -> next item; the models' "
                  "temperature applied to the logits (their forward() ignores it); embedding init std %s; weights of the best valid "
                  "NDCG@10 epoch; exact full ranking, score = max over the K interest vectors; history masked. "
                  "MIND's routing starts from random logits, so its lists depend on the seed (inference too)."
                  % (version("torch-rechub"), init.std)),
    }
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    checkpoint.remove()  # finished: a later run with the same out starts afresh
    print(json.dumps({k: result[k] for k in ("model", "epochs_run", "train_seconds", "infer_seconds")}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (PeerError, CheckpointRefused) as e:
        print(f"rechub run.py: error: {e}", file=sys.stderr)
        sys.exit(2)
