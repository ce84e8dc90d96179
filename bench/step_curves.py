"""Stage-2 validation against optimiser steps, not epochs: runs whose epochs hold different numbers of training
samples (random cuts against strided cuts, hybrid.train_stride) compared at equal steps.

    python -m bench.step_curves --dataset ../shared/data/ml-100k --run runs/conv100k/leave_one_out/preset-dropout0.3 \
        --run runs/conv100k/leave_one_out/preset-dropout0.3-stride5 --plot bench/results/stride_steps.png

Each run's curve comes from its train.log (a paused or unfinished run has no metrics.json yet); its steps per epoch
from its run_config.json and the dataset's training split, counted with the samplers stage 2 uses. Prints each run's
mean validation NDCG@10 over windows of steps, and draws the curves.
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np

_EPOCH = re.compile(r"\[hybrid\] epoch (\d+): .*?valid NDCG@10 ([0-9.]+)")


def valid_curve(log_text: str) -> list[float]:
    """Validation NDCG@10 per epoch from a stage-2 train.log (epochs in order; a resumed run logs each once)."""
    curve: dict[int, float] = {}
    for match in _EPOCH.finditer(log_text):
        curve[int(match.group(1))] = float(match.group(2))
    if sorted(curve) != list(range(1, len(curve) + 1)):
        raise ValueError(f"train.log epochs are not 1..n: {sorted(curve)[:10]}...")
    return [curve[e] for e in range(1, len(curve) + 1)]


def samples_per_epoch(train_sequences: list[np.ndarray], hybrid, train) -> int:
    """How many training samples one stage-2 epoch of these settings draws (training/stage2.epoch_samples; the count
    does not depend on the draw: one final window per sequence plus a fixed number of random cuts)."""
    from training.stage2 import epoch_samples

    return len(epoch_samples(train_sequences, hybrid, train.samples_per_user, np.random.default_rng(0)))


def step_windows(curve: list[float], steps_per_epoch: int, edges: list[int]) -> list[float | None]:
    """Mean validation of the epochs ending in each (edges[i], edges[i+1]] window of steps (None: no epoch there)."""
    ends = np.arange(1, len(curve) + 1) * steps_per_epoch
    values = np.asarray(curve)
    means = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = values[(ends > low) & (ends <= high)]
        means.append(float(inside.mean()) if len(inside) else None)
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step_curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run", action="append", required=True, type=Path, help="a stage-2 run directory (repeat)")
    parser.add_argument("--edges", default="0,700,1400,2100,3100", help="step windows' edges, comma-separated")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of validation NDCG@10 against steps")
    args = parser.parse_args(argv)
    from training.config import RunConfig
    from training.protocols import make_split
    from training.train import load_run_data

    edges = [int(e) for e in args.edges.split(",")]
    data = load_run_data(args.dataset)
    curves = []
    for run in args.run:
        config = RunConfig.load(run / "run_config.json")
        if config.train.protocol != "leave_one_out":
            raise SystemExit(f"{run}: only leave-one-out runs (this one is {config.train.protocol})")
        train_sequences = make_split(data, config.train.protocol, config.train.eval_window).train
        steps = math.ceil(samples_per_epoch(train_sequences, config.hybrid, config.train) / config.train.batch_size)
        curve = valid_curve((run / "train.log").read_text())
        curves.append((run.name, steps, curve))
        best = int(np.argmax(curve))
        print(f"{run.name}: {steps} steps an epoch, {len(curve)} epochs, best {curve[best]:.4f} at epoch {best + 1}")
    print("mean validation NDCG@10 by steps: " + ", ".join(f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])))
    for name, steps, curve in curves:
        cells = ["–" if m is None else f"{m:.4f}" for m in step_windows(curve, steps, edges)]
        print(f"  {name}: {' | '.join(cells)}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, steps, curve in curves:
            ax.plot(np.arange(1, len(curve) + 1) * steps, curve, marker=".", label=name)
        ax.set_xlabel("optimiser steps")
        ax.set_ylabel("validation NDCG@10")
        ax.set_title(f"stage 2 on {data.name}: validation against steps")
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
