"""Pausing a long training and resuming it: a slow dataset trained across CPU sessions.

A run with ``train.pause_after = S`` seconds stops at the first epoch end past S (SASRec's or stage 2's), keeps its
whole state in ``<run_dir>/resume/`` and exits with :data:`PAUSED_EXIT`; the same command later resumes it and ends
where one uninterrupted run ends (tests/training/test_run_resume.py: SASRec bit for bit; stage 2, whose CPU kernels
are not bitwise reproducible even run to run, to float noise). What a
training keeps: weights, optimiser, both random generators, the early-stopping state and its history. What a
finished step keeps (SASRec's model and record, stage 1's item table): enough that a later call skips it.

A checkpoint names the settings it was trained with; resuming under other settings is refused by name (an epoch cap
or a time budget may change between calls). Settings added since a checkpoint was made count as their defaults.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

PAUSED_EXIT = 75  # EX_TEMPFAIL ("try again"): the caller runs the same command again to resume
RESUME_DIR = "resume"
# what may change between the calls of one training without changing the model it trains
FREE_SETTINGS = ("epochs", "max_train_seconds", "pause_after", "sasrec_epochs")


class RunPaused(Exception):
    """A training stopped at an epoch end with its state in a checkpoint; the same call resumes it."""


def flatten(settings: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings (dataclasses.asdict) → {"hybrid.llm.lr": ...}, so a difference is named where it is."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_differ(now: dict, made: dict, defaults: dict) -> list[str]:
    """Names of the settings in which ``made`` (a checkpoint's, missing keys = ``defaults``) differs from ``now``."""
    now, made = flatten(now), {**flatten(defaults), **flatten(made)}
    return sorted(key for key, value in now.items()
                  if key.rsplit(".", 1)[-1] not in FREE_SETTINGS and made.get(key) != value)


def seconds_left(pause_after: float | None, elapsed: float) -> float | None:
    """A run's pause budget less what this call has spent already (None: never pause)."""
    return None if pause_after is None else max(0.0, pause_after - elapsed)


def save_checkpoint(path: str | Path, settings: dict, numpy_rng, **state) -> None:
    """The training state plus both random generators, written atomically."""
    _save_atomically({"config": settings, "numpy_rng": numpy_rng.bit_generator.state,
                      "torch_rng": torch.get_rng_state(),
                      "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, **state}, path)


def _save_atomically(obj: dict, path: str | Path) -> None:
    """torch.save through a partial file: a kill mid-write keeps the last complete one."""
    partial = Path(f"{path}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, partial)
    partial.replace(path)


def load_checkpoint(path: str | Path, settings: dict, defaults: dict, numpy_rng, what: str) -> dict | None:
    """The state :func:`save_checkpoint` wrote (None when there is none), with both random generators restored.
    Raises ValueError naming the settings that differ from ``settings``."""
    if not Path(path).is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    differ = settings_differ(settings, saved["config"], defaults)
    if differ:
        raise ValueError(f"{path} was trained with other {what} settings ({', '.join(differ)}): delete it to start "
                         "again")
    numpy_rng.bit_generator.state = saved["numpy_rng"]
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():  # dropout on a GPU draws from these
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved


def finished_step(resume_dir: Path | None, name: str, config: dict, defaults: dict) -> dict | None:
    """What :func:`keep_finished_step` kept of step ``name`` in an earlier call (None: not finished, or the run does
    not pause), with the torch generator as that step left it, so the steps after it draw as in one run. ``config``
    (the run's, as a dict) must match the one it was kept under; ``defaults`` stand in for settings added since."""
    path = None if resume_dir is None else resume_dir / f"{name}.done.pt"
    if path is None or not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    # both through JSON, as kept: a tuple setting reads back as a list
    differ = settings_differ(json.loads(json.dumps(config)), json.loads(saved.pop("config")),
                             json.loads(json.dumps(defaults)))
    if differ:
        raise ValueError(f"{path} was made with other run settings ({', '.join(differ)}): delete {resume_dir} to "
                         "start again")
    torch.set_rng_state(saved.pop("torch_rng"))
    return {**saved, "record": json.loads(saved["record"])}


def keep_finished_step(resume_dir: Path | None, name: str, config: dict, record: dict, **tensors) -> None:
    """Keep a finished step's ``record`` (its metrics.json part) and tensors for the later calls of a paused run."""
    if resume_dir is None:
        return
    # the record as JSON: it holds numpy scalars, which a weights_only load refuses
    _save_atomically({"record": json.dumps(record, default=float), "config": json.dumps(config),
                      "torch_rng": torch.get_rng_state(), **tensors}, resume_dir / f"{name}.done.pt")
