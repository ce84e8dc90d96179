"""Pausing and resuming a peer runner (docs/peers.md, "Long runs"): what every runner's checkpoint shares.

A runner runs in its library's own venv and imports nothing of the project's packages; it loads this one file by
path (standard library only), so each runner stays a script its venv can run alone. The harness
(bench/peers/runner.py) imports the same file for the exit status.

The contract: ``--pause-after S`` stops at the first epoch end past S seconds of this call (at least one epoch a
call), keeps OUT/checkpoint.* and exits ``EXIT_PAUSED``; the same command goes on from it, and the result equals an
uninterrupted run's. A checkpoint written on another split or with other settings is refused by name.
"""
from __future__ import annotations

import hashlib
import json
import os
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
