"""The `hymirec` command. Sub-commands map to the layers; heavy imports happen inside handlers only.

    hymirec train [--dataset D] [--run-dir R] [--set section.field=value ...]
    hymirec data summary --dataset D
    hymirec stream run|replay ...        (features/)
    hymirec export onnx|triton ...       (training/export/)
    hymirec index build ...              (serving/)
    hymirec serve | recommend ...        (serving/)
    hymirec release show|activate|rollback  (orchestration/releases.py)
    hymirec bench quality ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from hymirec.quiet import quiet_dependency_warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cmd_train(args: argparse.Namespace) -> int:
    from training.config import RunConfig
    from training.resume import PAUSED_EXIT, RunPaused
    from training.train import run_training

    config = RunConfig.load(args.config) if args.config else RunConfig()
    overrides = list(args.set or [])
    if args.dataset:
        overrides.append(f"dataset={json.dumps(args.dataset)}")
    if args.run_dir:
        overrides.append(f"run_dir={json.dumps(args.run_dir)}")
    config = config.override(overrides)  # top-level fields (dataset, run_dir) and section.field alike
    try:
        metrics = run_training(config, progress=not args.quiet)
    except RunPaused as paused:
        print(f"[train] {paused}", flush=True)
        return PAUSED_EXIT
    print(json.dumps({k: metrics[k] for k in ("popularity", "sasrec", "hymirec") if k in metrics},
                     indent=2, default=lambda o: None)[:4000])
    return 0


def _cmd_data_summary(args: argparse.Namespace) -> int:
    from training.data import dataset_summary, load_dataset, synthetic

    data = synthetic() if args.dataset == "synthetic" else load_dataset(args.dataset)
    print(json.dumps(dataset_summary(data), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hymirec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="two-stage HyMiRec training + baselines; writes a run directory")
    train.add_argument("--dataset", help="'synthetic' (default) or a dataset folder/file")
    train.add_argument("--run-dir", help="output run directory (default runs/latest)")
    train.add_argument("--config", help="RunConfig JSON file")
    train.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                       help="config override (train.pause_after=S: pause at the first epoch end past S seconds, "
                            "exit 75; the same command resumes)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_cmd_train)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    summary = data.add_parser("summary", help="load a dataset and print its counts")
    summary.add_argument("--dataset", required=True)
    summary.set_defaults(handler=_cmd_data_summary)

    from hymirec import cli_layers, cli_release

    cli_layers.register(sub)
    cli_release.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up promptly in logs, too
    quiet_dependency_warnings()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "stream":  # the streaming layer owns its whole argument parser
        from features.stream_cli import main as stream_main
        from training.data import load_dataset

        return int(stream_main(argv[1:], load_dataset=load_dataset) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Bad input and missing services get one clear line, not a traceback.
        print(f"hymirec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
