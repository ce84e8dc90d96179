#!/usr/bin/env python
"""RecBole 1.2.1 peer runner (docs/peers.md): SASRec / SINE trained on OUR leave-one-out split.

    .venv-peers/recbole/bin/python bench/peers/recbole/run.py --split DIR --out DIR --model sasrec|sine \
        --epochs E --time-budget SECONDS --seed S --dim 64 --max-len 50 --topk 100

Standalone: never imports hymirec/training/features/serving (they live in another venv).

How the split stays ours: RecBole is given pre-split "benchmark" files (`benchmark_filename`), which it loads
without filtering or re-splitting (recbole/data/dataset/dataset.py::build slices them back by file size):
  peer.train.inter  every (history -> next item) prefix of each user's train.tsv sequence, history capped at
                    --max-len (exactly what RecBole's own SequentialDataset.data_augmentation would produce)
  peer.valid.inter  one row per valid.tsv user: history = train sequence, target = valid item
  peer.test.inter   one row per test.tsv user:  history = train + valid (valid item last), target = test item
After loading we check, row by row, that RecBole's valid/test users, targets and last history items equal ours.

Resuming (docs/peers.md, "Long runs"): after every epoch the runner writes OUT/checkpoint.pt (model, optimizer,
early-stopping state, every random generator), atomically. Started again with the same split and arguments, it
goes on from there, and the result equals an uninterrupted run's. `--pause-after S` stops at the first epoch end
past S seconds of this invocation and exits 75, keeping the checkpoint: a converged CPU run split across sessions.

Ranking: RecBole's own full-sort path for sequential models (recbole.utils.case_study.full_sort_scores, the
evaluation dataloader) does NOT mask history items, so we call model.full_sort_predict ourselves and mask the
pad item and the user's whole train + valid history (not only the last --max-len items) before top-k.
"""
from __future__ import annotations

import os

# torch >= 2.6 defaults torch.load(weights_only=True), which RecBole 1.2.1's checkpoint/dataset loading predates.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MODELS = {"sasrec": "SASRec", "sine": "SINE"}
HEADER = "user_id\titem_id\ttimestamp"
SPLIT_FORMAT = "hymirec-peer-split/1"
# RecBole 1.2.1 on pandas 2.2 / torch 2.13 prints dozens of FutureWarnings per run (chained fillna, agg(len),
# torch.cuda.amp): harmless here, and they would bury our per-epoch lines in the bench's run.log.
warnings.filterwarnings("ignore", category=FutureWarning)
PATIENCE = 10  # epochs without a valid NDCG@10 gain before stopping (RecBole's default stopping_step)
sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/peers/run_state.py: standard library only
from run_state import EXIT_PAUSED, CheckpointRefused, LoopCheckpoint, run_fingerprint, say_paused  # noqa: E402


def die(msg: str) -> None:
    print(f"recbole peer: error: {msg}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        die(message)


def read_tsv(path: Path) -> np.ndarray:
    if not path.is_file():
        die(f"bad split directory: missing {path}")
    with path.open() as f:
        if f.readline().rstrip("\n") != HEADER:
            die(f"bad header in {path}: expected {HEADER!r}")
    try:
        rows = np.loadtxt(path, dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2)
    except ValueError as e:
        die(f"bad row in {path}: {e}")
    if rows.size and rows.shape[1] != 3:
        die(f"bad row in {path}: expected 3 columns")
    return rows.reshape(-1, 3)


def load_split(split: Path):
    """→ n_items, {user: train items in order}, valid {user: item}, test rows [U, 2] (user, item) in file order."""
    try:
        manifest = json.loads((split / "manifest.json").read_text())
        n_items = int(manifest["n_items"])
    except (OSError, ValueError, KeyError) as e:
        die(f"bad split directory: manifest.json unreadable ({e})")
    if manifest.get("format") != SPLIT_FORMAT:
        die(f"bad split directory: format {manifest.get('format')!r}, expected {SPLIT_FORMAT!r}")
    train, valid, test = (read_tsv(split / f"{n}.tsv") for n in ("train", "valid", "test"))
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        if rows.size and (rows[:, 1].min() < 1 or rows[:, 1].max() > n_items or rows[:, 0].min() < 0):
            die(f"bad split directory: {name}.tsv has ids outside users >= 0, items 1..{n_items}")
    if len(test) == 0:
        die("bad split directory: test.tsv is empty")
    if len(np.unique(test[:, 0])) != len(test) or len(np.unique(valid[:, 0])) != len(valid):
        die("bad split directory: a user has more than one valid/test row")
    train = train[np.lexsort((train[:, 2], train[:, 0]))]  # by user, then position
    users, starts = np.unique(train[:, 0], return_index=True)
    seqs = dict(zip(users.tolist(), np.split(train[:, 1], starts[1:])))
    valid_of = dict(zip(valid[:, 0].tolist(), valid[:, 1].tolist()))
    for u in test[:, 0].tolist():
        if u not in seqs:
            die(f"bad split directory: test user {u} has no training interactions")
    return n_items, seqs, valid_of, test[:, :2]


def write_atomic_files(ddir: Path, seqs, valid_of, test, max_len: int) -> None:
    """RecBole benchmark files (see module doc). Item ids stay our ids, as tokens."""
    ddir.mkdir(parents=True)

    def dump(name, rows):
        with (ddir / f"peer.{name}.inter").open("w") as f:
            f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            for u, hist, target in rows:
                f.write(f"{u}\t{' '.join(map(str, hist[-max_len:]))}\t{target}\n")

    dump("train", ((u, s[:t].tolist(), int(s[t])) for u, s in seqs.items() for t in range(1, len(s))))
    dump("valid", ((u, seqs[u].tolist(), i) for u, i in valid_of.items() if u in seqs))
    dump("test", ((u, seqs[u].tolist() + ([valid_of[u]] if u in valid_of else []), int(i)) for u, i in test))


def pad_histories(forward, max_len: int):
    """SINE's forward reshapes its attention to (-1, 1, MAX_ITEM_LIST_LENGTH) (sine.py line 174), but RecBole pads
    each file's histories only to that file's longest one. When no history reaches the cap (amazon-games-2018: the
    longest train sequence has 48 items), training fails with "shape '[-1, 1, 50]' is invalid". Right-padding with
    the pad id 0 is what RecBole itself does to every history shorter than its file's longest."""
    import torch.nn.functional as F

    def padded(item_seq, item_seq_len):
        if item_seq.shape[1] < max_len:
            item_seq = F.pad(item_seq, (0, max_len - item_seq.shape[1]))
        return forward(item_seq, item_seq_len)
    return padded


def main(argv=None) -> int:
    p = Parser(description="RecBole 1.2.1 peer runner (docs/peers.md)")
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--time-budget", type=float, default=None)  # omitted: no budget
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--patience", type=int, default=PATIENCE,
                   help="epochs without a validation NDCG@10 gain before stopping (default: RecBole's 10)")
    p.add_argument("--pause-after", type=float, default=None,
                   help="stop at the first epoch end past this many seconds, keep OUT/checkpoint.pt, exit 75")
    args = p.parse_args(argv)
    if min(args.epochs, args.dim, args.max_len, args.topk, args.patience) < 1:
        die("--epochs, --dim, --max-len, --topk and --patience must be >= 1")
    split, out = args.split.resolve(), args.out.resolve()
    args.split = split  # run() works from a temporary cwd
    n_items, seqs, valid_of, test = load_split(split)
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as tmp:
        os.chdir(tmp)  # RecBole writes ./log_tensorboard, ./saved ... relative to the cwd: keep them out of the repo
        write_atomic_files(Path(tmp) / "data" / "peer", seqs, valid_of, test, args.max_len)
        result = run(args, Path(tmp), n_items, seqs, valid_of, test, out)
    if result is None:  # paused (run() said where it stopped)
        return EXIT_PAUSED
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model", "epochs_run", "train_seconds", "infer_seconds")}))
    return 0


def run(args, tmp: Path, n_items, seqs, valid_of, test, out: Path) -> dict:
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    model_name = MODELS[args.model]
    overrides = {
        "data_path": str(tmp / "data"), "checkpoint_dir": str(tmp / "saved"),
        # pre-split: Dataset.build() returns the three files as they are (no filtering, eval_args' split unused)
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": None,
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "alias_of_item_id": ["item_id_list"],  # history tokens share the item id space with targets
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "embedding_size": args.dim, "hidden_size": args.dim,  # SINE reads the former, SASRec the latter
        "loss_type": "CE", "train_neg_sample_args": None,  # full softmax CE (both models' default loss)
        "epochs": args.epochs, "seed": args.seed, "reproducibility": True,
        "use_gpu": torch.cuda.is_available(), "show_progress": False, "state": "WARNING",
    }
    sys.argv = sys.argv[:1]  # Config also parses `--key=value` from sys.argv: only `overrides` may configure it
    config = Config(model=model_name, dataset="peer", config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])  # as recbole.quick_start.run_recbole: re-seed for init
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    # importing recbole.model.sequential_recommender.sine switches on torch.autograd anomaly detection globally
    # (a debugging leftover, sine.py line 25): it changes no result but slows every training step (~20% here).
    torch.autograd.set_detect_anomaly(False)
    if model_name == "SINE":
        model.forward = pad_histories(model.forward, config["MAX_ITEM_LIST_LENGTH"])
    trainer = Trainer(config, model)

    iid = dataset.iid_field
    tokens = dataset.field2id_token[iid]  # internal id -> our item id (as str); 0 is [PAD]
    to_ours = np.array([0] + [int(t) for t in tokens[1:]], dtype=np.int64)
    to_internal = np.zeros(n_items + 1, dtype=np.int64)
    to_internal[to_ours[1:]] = np.arange(1, len(to_ours))
    uid_ours = np.array([0] + [int(t) for t in dataset.field2id_token[dataset.uid_field][1:]], dtype=np.int64)

    valid_inter, test_inter = valid_data._dataset.inter_feat, test_data._dataset.inter_feat
    check_split(valid_inter, test_inter, dataset, uid_ours, to_ours, valid_of, test)

    # Masks: internal (row, item) pairs of every history item; valid rows mask train, test rows train + valid.
    def mask_pairs(users, with_valid):
        rows, cols = [], []
        for r, u in enumerate(users):
            h = seqs[u].tolist() + ([valid_of[u]] if with_valid and u in valid_of else [])
            rows.append(np.full(len(h), r)), cols.append(to_internal[h])
        empty = [np.zeros(0, dtype=np.int64)]
        return np.concatenate(rows or empty), np.concatenate(cols or empty)

    v_users = uid_ours[valid_inter[dataset.uid_field].numpy()].tolist()
    v_mask = mask_pairs(v_users, with_valid=False)
    t_mask = mask_pairs(test[:, 0].tolist(), with_valid=True)

    @torch.no_grad()
    def rank(inter, mask, k, bs=1024):
        """(top-k internal ids [U, k], -inf marks) with pad + history masked, batch by batch."""
        model.eval()
        ids, ok = [], []
        for b in range(0, len(inter), bs):
            scores = model.full_sort_predict(inter[b:b + bs].to(config["device"])).view(-1, dataset.item_num).cpu()
            scores[:, 0] = -np.inf
            sel = (mask[0] >= b) & (mask[0] < b + bs)
            scores[mask[0][sel] - b, mask[1][sel]] = -np.inf
            v, i = torch.topk(scores, min(k, scores.shape[1]))
            ids.append(i.numpy()), ok.append(np.isfinite(v.numpy()))
        return np.concatenate(ids), np.concatenate(ok)

    v_target = to_internal[[valid_of[u] for u in v_users]]

    def valid_ndcg10() -> float:
        ids, ok = rank(valid_inter, v_mask, 10)
        hit = (ids == v_target[:, None]) & ok
        return float((hit / np.log2(np.arange(2, 12))).sum() / max(1, len(ids)))

    # Training: RecBole's own epoch step, our loop (epoch cap, time budget, early stopping on valid NDCG@10).
    checkpoint = LoopCheckpoint(out / "checkpoint.pt", run_fingerprint(args, "model", "seed", "dim", "max_len"))
    try:
        loop = checkpoint.load(model, trainer.optimizer, train_data.generator)
    except CheckpointRefused as e:
        die(str(e))
    loop = loop or {"best": -1.0, "best_state": None, "best_epoch": 0, "history": [], "train_seconds": 0.0}
    best, best_state, best_epoch, history = loop["best"], loop["best_state"], loop["best_epoch"], loop["history"]
    epochs_run = epochs_at_start = len(history)
    prior_seconds = loop["train_seconds"]
    if epochs_run:
        print(f"[recbole {args.model}] resumed after epoch {epochs_run} (best {best:.5f} at {best_epoch})",
              file=sys.stderr, flush=True)
    t0, started = time.perf_counter() - prior_seconds, time.perf_counter()  # t0: the run's, started: this call's

    def finished() -> bool:
        over_budget = args.time_budget is not None and time.perf_counter() - t0 >= args.time_budget
        return epochs_run >= args.epochs or over_budget or (epochs_run and epochs_run - best_epoch >= args.patience)

    while not finished():
        if args.pause_after is not None and epochs_run > epochs_at_start \
                and time.perf_counter() - started >= args.pause_after:
            say_paused("recbole", checkpoint.path, time.perf_counter() - started, epochs_run)
            return None  # the checkpoint of the last epoch stays; the same command resumes
        te, ce = time.perf_counter(), time.process_time()
        loss = trainer._train_epoch(train_data, epochs_run, show_progress=False)
        ndcg = valid_ndcg10() if len(valid_inter) else 0.0
        epochs_run += 1
        history.append({"epoch": epochs_run, "loss": float(np.sum(loss)), "valid_ndcg10": round(ndcg, 5),
                        "seconds": round(time.perf_counter() - te, 2),
                        "cpu_seconds": round(time.process_time() - ce, 2)})  # wall is noisy on a shared box
        print(f"[recbole {args.model}] {history[-1]}", file=sys.stderr, flush=True)
        if ndcg > best:
            best, best_epoch, best_state = ndcg, epochs_run, copy.deepcopy(model.state_dict())
        checkpoint.save(model, trainer.optimizer, train_data.generator,
                        {"best": best, "best_state": best_state, "best_epoch": best_epoch, "history": history,
                         "train_seconds": time.perf_counter() - t0})
    train_seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)

    t1 = time.perf_counter()
    ids, ok = rank(test_inter, t_mask, args.topk)
    topk = np.where(ok, to_ours[ids], 0).astype(np.int64)
    if topk.shape[1] < args.topk:
        topk = np.pad(topk, ((0, 0), (0, args.topk - topk.shape[1])))
    infer_seconds = time.perf_counter() - t1
    np.save(out / "topk_test.tmp.npy", topk)
    os.replace(out / "topk_test.tmp.npy", out / "topk_test.npy")  # never a half-written list
    checkpoint.remove()  # finished: a later run with the same out starts afresh

    keys = ["embedding_size", "hidden_size", "n_layers", "n_heads", "inner_size", "hidden_dropout_prob",
            "attn_dropout_prob", "hidden_act", "layer_norm_eps", "initializer_range", "prototype_size",
            "interest_size", "tau_ratio", "reg_loss_ratio", "loss_type", "train_neg_sample_args",
            "MAX_ITEM_LIST_LENGTH", "train_batch_size", "learner", "learning_rate", "weight_decay",
            "clip_grad_norm", "epochs", "seed", "reproducibility", "shuffle"]
    params = {k: config[k] for k in keys if k in config.final_config_dict and (k != "hidden_size" or
                                                                               model_name == "SASRec")}
    params.update({"time_budget_s": args.time_budget, "topk": args.topk, "early_stopping": "valid NDCG@10",
                   "patience": args.patience, "best_epoch": best_epoch, "threads": torch.get_num_threads(),
                   "resumed": checkpoint.resumed})
    return {
        "library": "recbole", "version": recbole.__version__, "model": model_name,
        "epochs_run": epochs_run, "train_seconds": round(train_seconds, 3), "infer_seconds": round(infer_seconds, 3),
        "n_test_users": int(len(topk)), "params": params, "epochs": history,
        "notes": ("RecBole pre-split benchmark files built from our split (checked row by row); "
                  "train = all train.tsv prefixes; test history = train + valid; history items masked by the "
                  "runner (RecBole's sequential full-sort does not mask them); best epoch by valid NDCG@10 "
                  "restored; autograd anomaly detection switched off (RecBole's sine.py turns it on)"),
    }


def check_split(valid_inter, test_inter, dataset, uid_ours, to_ours, valid_of, test) -> None:
    """RecBole's valid/test rows must be ours: same users in test.tsv's order, same targets, valid item last."""
    uf, itf, lf = dataset.uid_field, dataset.iid_field, dataset.item_list_length_field
    seq_f = dataset.item_id_list_field
    t_users, t_items = uid_ours[test_inter[uf].numpy()], to_ours[test_inter[itf].numpy()]
    if not (np.array_equal(t_users, test[:, 0]) and np.array_equal(t_items, test[:, 1])):
        die("internal: RecBole's test rows differ from test.tsv")
    last = test_inter[seq_f][torch_arange(len(test_inter)), test_inter[lf] - 1].numpy()
    want = np.array([valid_of.get(int(u), -1) for u in test[:, 0]])
    has = want > 0
    if not np.array_equal(to_ours[last][has], want[has]):
        die("internal: the last test history item is not the valid item")
    v_users, v_items = uid_ours[valid_inter[uf].numpy()], to_ours[valid_inter[itf].numpy()]
    if any(valid_of.get(int(u)) != int(i) for u, i in zip(v_users, v_items)):
        die("internal: RecBole's valid rows differ from valid.tsv")


def torch_arange(n):
    import torch

    return torch.arange(n)


if __name__ == "__main__":
    sys.exit(main())
