"""Sub-commands of the streaming, export, index, serving and bench layers (registered by hymirec.cli).

Handlers import their layer lazily, so `hymirec --help` stays fast and light.
"""
from __future__ import annotations

import argparse


# the options a plan sets per dataset: given with --plan, they are refused rather than silently ignored
PLAN_OWNED = ("dataset", "set", "ablations", "peers", "seeds", "seeded_ablations", "only_ablations",
              "multi_seed_max_interactions", "epochs", "time_budget")


def _bench_quality(args: argparse.Namespace) -> int:
    from bench.plan import bench_quality_plan
    from bench.quality import bench_quality

    if args.plan:
        given = [f"--{k.replace('_', '-')}" for k in PLAN_OWNED if getattr(args, k) is not None]
        if given:
            raise ValueError(f"--plan sets {', '.join(given)} per dataset: edit the plan file instead")
        return bench_quality_plan(args.plan, args.out, data_dir=args.data_dir, report_only=args.report_only,
                                  ledger=args.ledger)
    if args.report_only:
        raise ValueError("--report-only needs --plan (it reports the plan's table and what is still missing)")
    given = {k: getattr(args, k) for k in PLAN_OWNED[2:] if getattr(args, k) is not None}  # else its defaults
    return bench_quality(args.dataset, args.out or "runs/bench", data_dir=args.data_dir, overrides=args.set,
                         ledger=args.ledger, **given)


def _bench_page(args: argparse.Namespace) -> int:
    from bench.results_page import write_page

    return write_page(check=args.check)


def _print(payload) -> None:
    import json

    print(json.dumps(payload, indent=2, default=str))


def _export_onnx(args: argparse.Namespace) -> int:
    from training.export.onnx_export import export_run

    _print(export_run(args.run_dir, n_cases=args.cases))
    return 0


def _export_triton(args: argparse.Namespace) -> int:
    from training.export.triton_repo import build_run_repo

    _print(build_run_repo(args.run_dir, version=args.version))
    return 0


def _index_build(args: argparse.Namespace) -> int:
    from serving.index import build_run_index

    _print(build_run_index(args.run_dir, uri=args.uri, alias=args.alias))
    return 0


def _milvus_server(args: argparse.Namespace) -> int:
    """`hymirec index server`: the Milvus standalone server in the foreground (loopback only) until Ctrl+C."""
    import signal
    import threading

    from devservices.milvus_standalone import MilvusStandalone

    server = MilvusStandalone(args.data, port=args.port).start()
    print(f"Milvus standalone server on {server.uri} (data {server.data_dir}); Ctrl+C stops it. Use it with "
          f"`hymirec index build --uri {server.uri}` and HYMIREC_MILVUS_URI={server.uri}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        while not stopped.wait(1.0):
            if server.proc is None or server.proc.poll() is not None:
                print("Milvus server exited; see " + str(server.log_path), flush=True)
                return 1
    finally:
        server.stop()
    return 0


def _serving_config(args: argparse.Namespace):
    from dataclasses import replace

    from serving.config import ServingConfig

    config = ServingConfig.from_env()
    changes = {key: value for key, value in (("artifact_dir", args.run_dir), ("triton_url", args.triton_url),
                                             ("milvus_uri", args.milvus_uri), ("feast_repo", args.store_config),
                                             ("release_root", args.release_root))
               if value is not None}
    from pathlib import Path

    for key in ("artifact_dir", "release_root"):
        if key in changes:
            changes[key] = Path(changes[key])
    if getattr(args, "port", None):
        changes["port"] = args.port
    return replace(config, **changes)


def _serve(args: argparse.Namespace) -> int:
    from serving.app import serve

    serve(_serving_config(args))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from serving.app import format_result, recommend_once

    for user in args.user:
        print(format_result(recommend_once(user, args.k, not args.include_seen, _serving_config(args))))
    return 0


def _triton_rollout(args: argparse.Namespace) -> int:
    from serving.triton_server import rollback, rollout

    _print(rollback(args.repo, args.model, args.url) if args.rollback
           else rollout(args.repo, args.model, args.version, args.url))
    return 0


def _serving_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", help="run directory with the artifacts (env HYMIREC_ARTIFACT_DIR)")
    parser.add_argument("--release-root", help="artifact root whose registry names the current release; followed "
                                               "without a restart (env HYMIREC_RELEASE_ROOT)")
    parser.add_argument("--triton-url", help="Triton gRPC host:port, or 'off' (env HYMIREC_TRITON_URL)")
    parser.add_argument("--milvus-uri", help="Milvus Lite path or server URI (env HYMIREC_MILVUS_URI)")
    parser.add_argument("--store-config", help="online store config file (env HYMIREC_FEAST_REPO)")


def _stream(args: argparse.Namespace) -> int:
    from features.stream_cli import main
    from training.data import load_dataset

    return main(args.rest, load_dataset=load_dataset)


def register(sub: argparse._SubParsersAction) -> None:
    stream = sub.add_parser("stream", help="Kafka → online store: run | replay | show (see `hymirec stream -h`)",
                            add_help=False)
    stream.add_argument("rest", nargs=argparse.REMAINDER)
    stream.set_defaults(handler=_stream)
    export = sub.add_parser("export", help="export a trained run").add_subparsers(dest="export_command", required=True)
    onnx = export.add_parser("onnx", help="ONNX lightweight encoder + LLM recommender, with a parity check")
    onnx.add_argument("--run-dir", default="runs/latest")
    onnx.add_argument("--cases", type=int, default=100, help="random inputs in the parity check")
    onnx.set_defaults(handler=_export_onnx)
    triton = export.add_parser("triton", help="add the LLM recommender as a new Triton model version")
    triton.add_argument("--run-dir", default="runs/latest")
    triton.add_argument("--version", type=int, help="version number (default: next)")
    triton.set_defaults(handler=_export_triton)

    index = sub.add_parser("index", help="item index").add_subparsers(dest="index_command", required=True)
    build = index.add_parser("build", help="new Milvus collection version + atomic alias swap")
    build.add_argument("--run-dir", default="runs/latest")
    build.add_argument("--uri", help="Milvus Lite path or server URI (default <run-dir>/milvus.db)")
    build.add_argument("--alias", default="hymirec_items")
    build.set_defaults(handler=_index_build)
    server = index.add_parser("server", help="run the Milvus standalone server on loopback (what tests, benchmarks "
                                             "and the demo start), in the foreground")
    server.add_argument("--data", default="runs/milvus-server", help="data directory (kept between runs)")
    server.add_argument("--port", type=int, default=19530, help="loopback port (0: a free one)")
    server.set_defaults(handler=_milvus_server)

    serve = sub.add_parser("serve", help="HTTP serving adapter (POST /recommend, /live, /ready, /metrics)")
    _serving_args(serve)
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=_serve)
    recommend = sub.add_parser("recommend", help="recommend for users from the command line")
    _serving_args(recommend)
    recommend.add_argument("--user", action="append", required=True)
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--include-seen", action="store_true")
    recommend.set_defaults(handler=_recommend)

    triton_cmd = sub.add_parser("triton", help="Triton model control").add_subparsers(dest="triton_command", required=True)
    roll = triton_cmd.add_parser("rollout", help="load version N+1 before unloading N (or --rollback)")
    roll.add_argument("--repo", required=True)
    roll.add_argument("--model", default="llm")
    roll.add_argument("--version", type=int)
    roll.add_argument("--url", required=True, help="Triton gRPC host:port")
    roll.add_argument("--rollback", action="store_true")
    roll.set_defaults(handler=_triton_rollout)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    quality = bench.add_parser(
        "quality", help="popularity, SASRec, HyMiRec + ablations and peer libraries on real datasets",
        description="One leave-one-out split, one evaluator and one budget rule for every method; one JSON per "
                    "run, results.json / results.md / recall_at_k.png under --out. Re-running with the same --out "
                    "resumes (finished runs are skipped).")
    quality.add_argument("--plan", help="a TOML plan: every dataset with its own budget, seeds, peers and "
                                        "ablations (bench/plans/quality.toml = the BENCHMARKS.md table)")
    quality.add_argument("--report-only", action="store_true",
                         help="with --plan: train nothing; write the table from what is on disk and list the runs "
                              "still missing")
    quality.add_argument("--dataset", action="append",
                         help="dataset folder/file, FOLDER/NAME, a name under --data-dir, 'synthetic' or 'all' "
                              "(repeatable; default: ml-100k, ml-1m, amazon-games-2018, S3-Rec Beauty/Sports/Toys)")
    quality.add_argument("--data-dir", help="where names and 'all' are looked up (default $HYMIREC_DATA_DIR or "
                                            "../shared/data)")
    quality.add_argument("--out", help="output folder (JSON, Markdown, PNG; resume state; default runs/bench, or "
                                       "the plan's out)")
    quality.add_argument("--ledger", help="folder that keeps a copy of every finished record across checkouts "
                                          "(and counts as done on resume); 'none' = no ledger (default: the "
                                          "plan's ledger, else none)")
    quality.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="config override (ours)")
    quality.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                         help="run the HyMiRec ablations (default: yes)")
    quality.add_argument("--peers", default=None,
                         help="all | none | comma list of peers or libraries (rectools-sasrec, rectools-bert4rec, "
                              "recbole-sasrec, recbole-sine, rechub-comirec-sa, rechub-mind; rectools, recbole, rechub)")
    quality.add_argument("--seeds", default=None,
                         help="comma list; HyMiRec, our SASRec and the strongest peer run every seed on the smaller "
                              "datasets, everything else the first one (default 0,1,2)")
    quality.add_argument("--seeded-ablations", default=None,
                         help="comma list of ablation keys (e.g. hymirec-k3) that also run every seed")
    quality.add_argument("--only-ablations", default=None,
                         help="comma list of ablation keys to run instead of all of them (e.g. to spread the "
                              "ablations over several processes sharing one --out)")
    quality.add_argument("--multi-seed-max-interactions", type=int, default=None,
                         help="datasets up to this many interactions get every seed (default 200000)")
    quality.add_argument("--epochs", "--peer-epochs", dest="epochs", type=int, default=None,
                         help="budget rule: at most E epochs per trained model, ours and peers (default 200: the "
                              "time budget is the binding limit)")
    quality.add_argument("--time-budget", type=float, default=None,
                         help="budget rule: at most T seconds of training per model, checked at epoch ends; "
                              "0 = none (default 400)")
    quality.set_defaults(handler=_bench_quality)
    page = bench.add_parser("page", help="write BENCHMARKS.md from the committed benchmark records")
    page.add_argument("--check", action="store_true", help="only check that BENCHMARKS.md is current (exit 1 if not)")
    page.set_defaults(handler=_bench_page)
