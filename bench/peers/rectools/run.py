"""RecTools peer runner (docs/peers.md): SASRecModel / BERT4RecModel with softmax loss.

Standalone: runs in .venv-peers/rectools and never imports the HyMiRec packages.

    .venv-peers/rectools/bin/python bench/peers/rectools/run.py --split DIR --out DIR \
        --model sasrec|bert4rec --epochs E [--time-budget SECONDS] [--patience P] --seed S --dim 64 --max-len 50 \
        --topk 100

``--patience P`` trains the way RecTools' "Transformers Advanced Training Guide" does: a validation fold made by
``get_val_mask_func`` (here each user's valid.tsv item, which RecTools then keeps out of training), a Lightning
callback computing NDCG@10 on it after every epoch, early stopping after P epochs without a gain, and the weights
of the best epoch for the test lists. Without it, every epoch up to the cap or budget trains (the equal-budget
bench's way).

Resuming (docs/peers.md, "Long runs"): ``--pause-after S`` stops at the first epoch end past S seconds of this call,
writes OUT/checkpoint.ckpt (Lightning's checkpoint: weights, optimizer, loop state, plus our callbacks' state:
validation history, best weights, every random generator) and exits 75; the same command goes on from it. A
checkpoint made on another split or with other settings is refused by name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HEADER = ["user_id", "item_id", "timestamp"]
MODELS = ("sasrec", "bert4rec")
sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/peers/run_state.py: standard library only
from run_state import (EXIT_PAUSED, refusal, replace_atomically, run_fingerprint, say_paused,  # noqa: E402
                       write_json_atomically)


def die(msg: str) -> None:
    """One-line error and a non-zero exit, as the protocol asks."""
    print(f"rectools runner: error: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="RecTools peer runner (docs/peers.md)")
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--time-budget", type=float, default=None)  # omitted: no budget
    p.add_argument("--patience", type=int, default=0,
                   help="> 0: early stopping on validation NDCG@10 after this many epochs without a gain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--pause-after", type=float, default=None,
                   help="stop at the first epoch end past this many seconds, keep OUT/checkpoint.ckpt, exit 75")
    a = p.parse_args(argv)
    if a.model not in MODELS:
        die(f"unknown model {a.model!r} (expected one of {', '.join(MODELS)})")
    for name in ("epochs", "dim", "max_len", "topk"):
        if getattr(a, name) < 1:
            die(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.time_budget is not None and a.time_budget <= 0:
        die(f"--time-budget must be > 0, got {a.time_budget}")
    if a.patience < 0:
        die(f"--patience must be >= 0, got {a.patience}")
    return a


def read_split(split: Path):
    """Read and check the three tsv files; returns (train, valid, test) DataFrames of int64."""
    import pandas as pd

    if not split.is_dir():
        die(f"split directory {split} does not exist")
    n_items = None
    manifest = split / "manifest.json"
    if manifest.is_file():
        try:
            n_items = int(json.loads(manifest.read_text())["n_items"])
        except (ValueError, KeyError, TypeError) as e:
            die(f"{manifest}: unreadable manifest ({e!r})")
    frames = []
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        path = split / name
        if not path.is_file():
            die(f"bad split directory {split}: missing {name}")
        with path.open() as f:
            header = f.readline().rstrip("\r\n").split("\t")
        if header != HEADER:
            die(f"{path}: bad header {header!r}, expected {HEADER!r}")
        try:
            df = pd.read_csv(path, sep="\t", dtype="int64")
        except (ValueError, pd.errors.ParserError) as e:
            die(f"{path}: non-integer or malformed rows ({str(e).splitlines()[0]})")
        if len(df) and (df["item_id"].min() < 1 or (n_items is not None and df["item_id"].max() > n_items)):
            die(f"{path}: item ids outside 1..{n_items or 'N'}")
        if len(df) and df["user_id"].min() < 0:
            die(f"{path}: negative user ids")
        frames.append(df)
    if len(frames[0]) == 0 or len(frames[2]) == 0:
        die(f"bad split directory {split}: empty train.tsv or test.tsv")
    return frames


def to_rectools(df):
    """Our columns -> RecTools interactions. The timestamp is the position in the user's sequence;
    as seconds since the epoch it keeps the exact chronological order RecTools sorts by."""
    import pandas as pd
    from rectools import Columns

    return pd.DataFrame({
        Columns.User: df["user_id"].to_numpy(),
        Columns.Item: df["item_id"].to_numpy(),
        Columns.Weight: 1.0,
        Columns.Datetime: pd.to_datetime(df["timestamp"].to_numpy(), unit="s"),
    })


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train_df, valid_df, test_df = read_split(args.split)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        die(f"cannot create --out {args.out}: {e.strerror}")

    # Determinism on a GPU (if one is present) needs this before CUDA starts; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import numpy as np
    import pandas as pd
    import pytorch_lightning as pl
    import rectools
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import BERT4RecModel, SASRecModel

    # Lightning and RecTools are chatty (num_workers hints, cold-user warnings); keep stdout clean.
    warnings.filterwarnings("ignore")
    import logging
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    pl.seed_everything(args.seed, workers=True, verbose=False)

    class TimeBudget(pl.Callback):
        """Stops training at the first epoch end past the budget (measured from the start of fit(),
        so RecTools' data preparation counts) and records per-epoch wall times."""

        def __init__(self, budget: float, pause_after: float | None = None):
            self.budget, self.t_fit, self.t_epoch, self.epoch_seconds = budget, 0.0, 0.0, []
            self.pause_after, self.paused_after_epoch, self.resumed = pause_after, None, 0
            self.seconds_before = 0.0  # fit() seconds of the calls before this one (a resumed run's)

        def on_train_epoch_start(self, trainer, pl_module):
            self.t_epoch = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            # validation has run (Lightning validates before this hook): a checkpoint here holds the whole epoch
            self.epoch_seconds.append(time.perf_counter() - self.t_epoch)
            if self.budget is not None and time.perf_counter() - self.t_fit >= self.budget:
                trainer.should_stop = True
            last = trainer.should_stop or trainer.current_epoch + 1 >= trainer.max_epochs
            if self.pause_after is not None and not last and time.perf_counter() - self.t_fit >= self.pause_after:
                self.paused_after_epoch, trainer.should_stop = trainer.current_epoch + 1, True
                checkpoint.save(trainer)

        def state_dict(self):  # saved in the checkpoint, with every generator the next epoch draws from
            import random

            import numpy as np
            import torch
            return {"epoch_seconds": self.epoch_seconds, "resumed": self.resumed,
                    "train_seconds": self.seconds_before + time.perf_counter() - self.t_fit,
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}

        def load_state_dict(self, state):
            self.epoch_seconds, self.resumed, self.generators = state["epoch_seconds"], state["resumed"] + 1, state
            # checkpoints written before this was kept: their epochs' own seconds (data preparation left out)
            self.seconds_before = state.get("train_seconds", sum(self.epoch_seconds))

        def on_train_start(self, trainer, pl_module):
            # the generators go back at the start of training, not at load: Lightning draws from torch's between
            # restoring a checkpoint and starting, which an uninterrupted run does not
            if getattr(self, "generators", None):
                import random

                import numpy as np
                import torch
                torch.set_rng_state(self.generators["torch_rng"]), np.random.set_state(self.generators["numpy_rng"])
                random.setstate(self.generators["python_rng"])

    class ValidationNDCG(pl.Callback):
        """NDCG@10 of the validation fold after every epoch (the valid.tsv item against every item, the items of
        the input session masked), early stopping after ``patience`` epochs without a gain, and
        the best epoch's weights kept: the advanced training guide's ValidationMetrics + EarlyStopping +
        best-NDCG checkpoint, computed in torch (as the guide advises) and held in memory."""

        def __init__(self, patience: int):
            self.patience, self.sums, self.users = patience, 0.0, 0
            self.best, self.best_epoch, self.best_state, self.history = -1.0, 0, None, []

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            import torch

            y = batch["y"].reshape(-1)  # [B] internal ids of the valid items
            logits = outputs["logits"].reshape(len(y), -1).clone()  # [B, n_items + extra tokens]
            logits[:, :len(pl_module.item_extra_tokens)] = -torch.inf  # PAD (and MASK): never recommended
            logits.scatter_(1, batch["x"].reshape(len(y), -1), -torch.inf)  # the history (PAD ids included)
            target = outputs["logits"].reshape(len(y), -1).gather(1, y[:, None])
            rank = (logits > target).sum(1)
            self.sums += float(torch.where(rank < 10, 1.0 / torch.log2(rank.float() + 2), 0.0).sum())
            self.users += len(y)

        def on_validation_epoch_end(self, trainer, pl_module):
            if trainer.sanity_checking or not self.users:
                return
            ndcg, epoch = self.sums / self.users, trainer.current_epoch + 1
            self.sums, self.users = 0.0, 0
            self.history.append({"epoch": epoch, "valid_ndcg10": round(ndcg, 5)})
            print(f"[rectools] epoch {epoch}: valid NDCG@10 {ndcg:.5f}", file=sys.stderr, flush=True)
            if ndcg > self.best:
                self.best, self.best_epoch = ndcg, epoch
                self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            elif epoch - self.best_epoch >= self.patience:
                trainer.should_stop = True

        def state_dict(self):
            return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state,
                    "history": self.history}

        def load_state_dict(self, state):
            self.best, self.best_epoch, self.best_state, self.history = (
                state["best"], state["best_epoch"], state["best_state"], state["history"])
            print(f"[rectools] resumed after epoch {len(self.history)} (best {self.best:.5f} at {self.best_epoch})",
                  file=sys.stderr, flush=True)

    class ResumingTrainer(pl.Trainer):
        """RecTools calls ``fit`` on (a copy of) the trainer it is given: this one goes on from OUT's checkpoint."""

        def fit(self, lightning_model, *fit_args, **fit_kwargs):
            fit_kwargs.setdefault("ckpt_path", checkpoint.resume_path())
            if fit_kwargs["ckpt_path"]:
                # RecTools' on_train_start draws fresh Xavier weights unless the module "is fitted": it would
                # overwrite the restored ones (and the restored random generators' next draws)
                lightning_model.is_fitted = True
            return super().fit(lightning_model, *fit_args, **fit_kwargs)

    checkpoint = Checkpoint(args.out / "checkpoint.ckpt",
                            run_fingerprint(args, "model", "seed", "dim", "max_len", "patience"))

    budget = TimeBudget(args.time_budget, args.pause_after)
    validation = ValidationNDCG(args.patience) if args.patience else None

    def get_trainer() -> pl.Trainer:
        # Like RecTools' default trainer, minus min_epochs (it would veto should_stop) plus our callback.
        return ResumingTrainer(max_epochs=args.epochs, deterministic=True, accelerator="auto", devices=1,
                               enable_progress_bar=False, enable_model_summary=False, logger=False,
                               enable_checkpointing=False, num_sanity_val_steps=0,
                               callbacks=[budget] + ([validation] if validation else []))

    # RecTools defaults otherwise (2 blocks, 4 heads, dropout 0.2, lr 1e-3, batch 128, softmax loss);
    # written out so result.json records them.
    params = dict(n_factors=args.dim, session_max_len=args.max_len, n_blocks=2, n_heads=4,
                  dropout_rate=0.2, lr=1e-3, batch_size=128, loss="softmax", train_min_user_interactions=2)
    if args.model == "bert4rec":
        params["mask_prob"] = 0.15
    cls = SASRecModel if args.model == "sasrec" else BERT4RecModel
    valid_users = set(valid_df["user_id"].tolist())

    def get_val_mask_func(interactions):
        """The validation fold: each valid.tsv user's newest interaction of train + valid, i.e. its valid row
        (the guide's leave-one-out mask). RecTools keeps these rows out of training."""
        newest_first = interactions.sort_values(Columns.Datetime, ascending=False, kind="stable")
        rank = newest_first.groupby(Columns.User, sort=False).cumcount()
        return (interactions[Columns.User].isin(valid_users) & (rank == 0)).to_numpy()

    model = cls(epochs=args.epochs, deterministic=True, get_trainer_func=get_trainer,
                # Score every item in one pass per user batch with torch (CPU unless a GPU is present).
                recommend_use_torch_ranking=True, get_val_mask_func=get_val_mask_func if validation else None,
                **params)

    # 1. Train on train.tsv only: valid.tsv is never training data. With --patience its rows join the dataset
    #    as the validation fold, which RecTools masks out of training.
    train_ds = Dataset.construct(to_rectools(pd.concat([train_df, valid_df], ignore_index=True)
                                             if validation else train_df))
    t0 = time.perf_counter()
    budget.t_fit = t0  # set before fit(), so the trainer copy RecTools makes inside fit() carries it
    model.fit(train_ds)
    train_seconds = time.perf_counter() - t0
    # RecTools fits a deepcopy of the trainer built by get_trainer (callbacks included): read that copy.
    budget = next(cb for cb in model.fit_trainer.callbacks if isinstance(cb, TimeBudget))
    train_seconds += budget.seconds_before  # a resumed run's earlier calls too
    if budget.paused_after_epoch is not None:
        say_paused("rectools", checkpoint.path, train_seconds - budget.seconds_before, budget.paused_after_epoch)
        sys.exit(EXIT_PAUSED)
    if validation:
        validation = next(cb for cb in model.fit_trainer.callbacks if isinstance(cb, ValidationNDCG))
        model.lightning_model.load_state_dict(validation.best_state)  # the best epoch's weights

    # 2. Recommend with train + valid as the history. The Dataset is rebuilt from both files so its id maps
    # cover every item and user seen so far (external ids = our ids); RecTools maps it onto the model's
    # item space (items of train.tsv) and drops history items the model never saw from the input sequence.
    t0 = time.perf_counter()
    hist = pd.concat([train_df, valid_df], ignore_index=True)
    full_ds = Dataset.construct(to_rectools(hist))
    test_users = test_df["user_id"].to_numpy()
    uniq_users = list(dict.fromkeys(test_users.tolist()))  # file order, once each
    known = set(hist["user_id"].unique().tolist())
    rec_users = [u for u in uniq_users if u in known]  # a user with no history at all cannot be ranked
    reco = model.recommend(users=rec_users, dataset=full_ds, k=args.topk, filter_viewed=True)
    topk = np.zeros((len(test_users), args.topk), dtype=np.int64)
    row_of = {u: i for i, u in enumerate(uniq_users)}
    rows = np.fromiter((row_of[u] for u in reco["user_id"].to_numpy().tolist()), dtype=np.int64, count=len(reco))
    uniq_top = np.zeros((len(uniq_users), args.topk), dtype=np.int64)
    uniq_top[rows, reco["rank"].to_numpy(dtype=np.int64) - 1] = reco["item_id"].to_numpy(dtype=np.int64)
    topk[:] = uniq_top[[row_of[u] for u in test_users.tolist()]]
    infer_seconds = time.perf_counter() - t0

    n_model_items = len(model.data_preparator.get_known_item_ids())
    n_short = int((topk[:, -1] == 0).sum())
    epochs_run = len(budget.epoch_seconds)
    stopped = ("early stopping (validation NDCG@10)" if validation and epochs_run - validation.best_epoch >=
               args.patience else "time budget" if epochs_run < args.epochs else "epoch cap")
    np.save(args.out / "topk_test.npy", topk)
    result = {
        "library": "rectools",
        "version": rectools.__version__,
        "model": args.model,
        "epochs_run": epochs_run,
        "train_seconds": round(train_seconds, 3),
        "infer_seconds": round(infer_seconds, 3),
        "n_test_users": int(len(test_users)),
        "params": {**params, "epochs": args.epochs, "time_budget": args.time_budget, "seed": args.seed,
                   "topk": args.topk, "model_class": cls.__name__, "patience": args.patience,
                   "resumed": budget.resumed,
                   **({"early_stopping": "valid NDCG@10", "best_epoch": validation.best_epoch,
                       "best_valid_ndcg10": round(validation.best, 5)} if validation else {})},
        "epochs": validation.history if validation else [],
        "notes": (f"{cls.__name__} ({rectools.__version__}), RecTools defaults apart from n_factors/session_max_len; "
                  f"stopped by {stopped}; epoch seconds {[round(s, 2) for s in budget.epoch_seconds]}; "
                  f"model knows {n_model_items} items (those of train.tsv); "
                  f"{len(uniq_users) - len(rec_users)} test users without history; "
                  f"{n_short} rows shorter than topk (0-padded); filter_viewed=True on train+valid history"),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    checkpoint.remove()  # finished: a later run with the same out starts afresh
    print(json.dumps({k: result[k] for k in ("model", "epochs_run", "train_seconds", "infer_seconds")}))


class Checkpoint:
    """OUT/checkpoint.ckpt (Lightning's) beside OUT/checkpoint.json (the fingerprint of the run that wrote it)."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path, self.fingerprint = path, fingerprint
        self.meta = path.with_suffix(".json")

    def resume_path(self) -> str | None:
        """The checkpoint to go on from, None to start afresh; one of another run is refused by name."""
        if not self.path.is_file():
            return None
        try:
            theirs = json.loads(self.meta.read_text())
        except (OSError, ValueError) as e:
            die(f"checkpoint {self.path} without a readable {self.meta.name} ({e}); delete it to start afresh")
        refused = refusal(self.path, theirs, self.fingerprint)
        if refused:
            die(refused)
        return str(self.path)

    def save(self, trainer) -> None:
        write_json_atomically(self.meta, self.fingerprint)
        replace_atomically(self.path, trainer.save_checkpoint)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True), self.meta.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
