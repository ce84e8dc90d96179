"""Sub-commands of the streaming, export, index, serving and bench layers (registered by hymirec.cli).

Handlers import their layer lazily, so `hymirec --help` stays fast and light.
"""
from __future__ import annotations

import argparse


def _bench_quality(args: argparse.Namespace) -> int:
    from training.bench_quality import run_bench

    datasets = args.dataset or ["/work/shared/data/ml-100k", "/work/shared/data/amazon-games-2018",
                                "/work/shared/data/s3rec-amazon-yelp-lastfm/Beauty"]
    run_bench(datasets, args.out, args.set or [], args.ablations)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    quality = bench.add_parser("quality", help="popularity vs SASRec vs HyMiRec on real datasets")
    quality.add_argument("--dataset", action="append", help="dataset folder/file (repeatable)")
    quality.add_argument("--out", default="runs/bench", help="output folder (JSON, Markdown, PNG)")
    quality.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="config override")
    quality.add_argument("--ablations", action="store_true", help="also run the HyMiRec ablations")
    quality.set_defaults(handler=_bench_quality)
