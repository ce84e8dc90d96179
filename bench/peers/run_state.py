"""Pausing and resuming a peer runner (docs/peers.md, "Long runs"): what every runner's checkpoint shares.

A runner runs in its library's own venv and imports nothing of the project's packages; it loads this one file by
path (standard library only), so each runner stays a script its venv can run alone. The harness
(bench/peers/runner.py) imports the same file for the exit status.

The contract: ``--pause-after S`` stops at the first epoch end past S seconds of this call (at least one epoch a
call), keeps OUT/checkpoint.* and exits ``EXIT_PAUSED``; the same command goes on from it, and the result equals an
uninterrupted run's. A checkpoint written on another split or with other settings is refused by name.

``LoopCheckpoint`` is the checkpoint of a runner that drives its own torch training loop (RecBole's, torch-rechub's);
it imports torch only when used, so importing this file stays standard library only. RecTools trains through
Lightning, whose own checkpoint its runner extends.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

EXIT_PAUSED = 75  # EX_TEMPFAIL: --pause-after stopped it with a checkpoint; the same command resumes


def holds_checkpoint(out: Path) -> bool:
    """Whether a runner's output folder holds a paused run's checkpoint (every runner names it checkpoint.*)."""
    return any(Path(out).glob("checkpoint*"))


def split_sha256(split: Path) -> dict[str, str]:
    """File name → sha256 of the split's files: a checkpoint resumes only on the split it was made on."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path(split).glob("*")) if f.is_file()}


def run_fingerprint(args, *settings: str) -> dict:
    """The ``settings`` of ``args`` that decide how training goes, and the split's files (``args.split``). The epoch
    cap, time budget and pause only decide when it ends, so a resumed call may change them."""
    return {**{name: getattr(args, name) for name in settings}, "split": split_sha256(args.split)}


def refusal(path: Path, saved: dict, ours: dict) -> str | None:
    """Why the checkpoint at ``path`` (``saved``: its fingerprint) cannot be resumed by this run; None if it can."""
    differ = [k for k in ours if saved.get(k) != ours[k]]
    if not differ:
        return None
    what = ", ".join("split (another split)" if k == "split" else f"{k} ({saved.get(k)} vs {ours[k]})" for k in differ)
    return f"checkpoint {path} was made with other settings: {what}; delete it to start afresh"


def replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` then rename onto ``path``: a kill mid-write leaves the previous checkpoint whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json_atomically(path: Path, value) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(value)))


def say_paused(runner: str, checkpoint: Path, seconds: float, epoch: int) -> None:
    """Tell stderr that ``--pause-after`` stopped this call: after which epoch, the seconds this call trained, and
    which checkpoint the same command goes on from."""
    print(f"{runner} peer: paused after epoch {epoch} ({seconds:.0f} s in this call); checkpoint {checkpoint}: "
          "run the same command again to resume", file=sys.stderr)


class CheckpointRefused(Exception):
    """A checkpoint this run cannot go on from: unreadable, of another layout, or made on another split or with
    other settings."""


class LoopCheckpoint:
    """OUT/checkpoint.pt of a runner's own torch training loop: what it needs to go on as if it had never stopped.

    It holds the model's and the optimizer's state, the loop's own state (``loop``: validation history, best weights,
    seconds so far; plain values and tensors), every random generator the next epoch draws from (the data loader's
    ``torch.Generator``, torch's, numpy's and Python's global ones, and a runner's own ``numpy.random.Generator``
    where it has one), and the run's fingerprint. Written atomically, loaded with ``weights_only=True`` (numpy's
    global state is kept with its key array as a list for that).
    """

    def __init__(self, path: Path, fingerprint: dict):
        self.path, self.fingerprint, self.resumed = Path(path), fingerprint, 0  # resumed: restarts so far

    def load(self, model, optimizer, loader_generator, numpy_generator=None) -> dict | None:
        """The saved ``loop``, with the model, optimizer and generators restored in place; None where there is no
        checkpoint. Raises CheckpointRefused for a torn or foreign file, or one this run's fingerprint refuses."""
        import numpy as np
        import torch

        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)  # tensors and plain values only
        except Exception as e:  # a torn or foreign file: say so rather than train from a guess
            raise CheckpointRefused(f"unreadable checkpoint {self.path} ({e}); delete it to start afresh") from e
        refused = refusal(self.path, saved.get("fingerprint") or {}, self.fingerprint)
        if refused:
            raise CheckpointRefused(refused)
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            rng = saved["rng"]
            loader_generator.set_state(rng["loader"])
            torch.set_rng_state(rng["torch"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
            random.setstate(rng["python"])
            if numpy_generator is not None:
                numpy_generator.bit_generator.state = rng["numpy_generator"]
            self.resumed = saved["resumed"] + 1
            return saved["loop"]
        except KeyError as e:  # an older runner's layout: its state cannot be restored whole
            raise CheckpointRefused(f"checkpoint {self.path} lacks {e} (written by another runner version); "
                                    "delete it to start afresh") from e

    def save(self, model, optimizer, loader_generator, loop: dict, numpy_generator=None) -> None:
        import numpy as np
        import torch

        name, keys, *rest = np.random.get_state()
        rng = {"loader": loader_generator.get_state(), "torch": torch.get_rng_state(),
               "numpy": (name, keys.tolist(), *rest), "python": random.getstate(),
               **({"numpy_generator": numpy_generator.bit_generator.state} if numpy_generator is not None else {})}
        blob = {"fingerprint": self.fingerprint, "resumed": self.resumed, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "loop": loop, "rng": rng}
        replace_atomically(self.path, lambda tmp: torch.save(blob, tmp))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
