#!/usr/bin/env python
"""Serving benchmark (issue 4): /recommend p50/p99 per stage and end to end at concurrency 1 and 8 over an index of
>= 100k items, plus three component comparisons.

    .venv/bin/python bench/serving.py                      # 100k items, writes runs/bench-serving/
    .venv/bin/python bench/serving.py --items 100000 --requests 400 --out runs/bench-serving/result.json
    make bench-serving                                     # 100k and 1M items, then the results page (record)

What runs (all real, all on loopback): a synthetic run directory built with the project's model classes and
exporters (random weights: latency does not depend on them), the Feast SQLite online store, the Milvus standalone
server (devservices/milvus_standalone.py; HNSW M=16, efConstruction=128, search ef = serving's default, Bounded
consistency), tritonserver with the LLM under the Python backend (CPU), and the app under uvicorn in its own
process (HYMIREC_* env config, as `hymirec serve` runs it). The load generator uses httpx threads.

Component comparisons:
  * lightweight encoder: ONNX Runtime vs PyTorch eager, batch 1 and 32 (T = long_len)
  * LLM recommender: Triton gRPC round trip vs in-process ONNX Runtime (batch 1)
  * Milvus: one search with nq = K vs K searches with nq = 1
  * ANN recall@60 of the index against exact search, per HNSW ef (queries: 300 of the index's own item vectors,
    3 per search; bench/ann_recall.py measures it on a trained run's real vectors and users' interests)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values, q):
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


def timeit(fn, n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def _client_process(url: str, users: list[str], k: int, ready, go, results) -> None:
    """One client: its own process and connection (8 clients are 8 processes, so the load generator's GIL does not
    queue requests the way 8 threads in one process would), warmed up, then released together with the others."""
    import httpx

    records = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for u in users[:5]:
            client.post("/recommend", json={"user_id": u, "k": k})
        ready.release()
        go.wait()
        for u in users:
            t = time.perf_counter()
            r = client.post("/recommend", json={"user_id": u, "k": k})
            ms = (time.perf_counter() - t) * 1000.0
            body = r.json() if r.status_code == 200 else None
            records.append((ms, {"mode": body["mode"], "latency_ms": body["latency_ms"]} if body else None,
                            r.status_code))
    results.put(records)


def run_load(url: str, users: list[str], concurrency: int, n_requests: int, k: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # the parent holds gRPC channels and torch threads: never fork it
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    share = [[users[i % len(users)] for i in range(c, n_requests, concurrency)] for c in range(concurrency)]
    procs = [ctx.Process(target=_client_process, args=(url, part, k, ready, go, results), daemon=True)
             for part in share]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=120):
            raise RuntimeError("a load-generator process did not start")
    started = time.perf_counter()
    go.set()
    records = [r for _ in procs for r in results.get(timeout=600)]
    wall = time.perf_counter() - started
    for p in procs:
        p.join(10)
    bodies = [b for _, b, _ in records if b]
    stages = sorted({s for b in bodies for s in b["latency_ms"]})
    out = {"concurrency": concurrency, "requests": len(records), "throughput_rps": len(records) / wall,
           "non_200": sum(1 for _, _, c in records if c != 200),
           "modes": {m: sum(1 for b in bodies if b["mode"] == m) for m in ("full", "coarse_only", "popular")},
           "client_e2e_ms": {"p50": pct([r[0] for r in records], 50), "p99": pct([r[0] for r in records], 99)},
           "stages_ms": {}}
    for s in stages:
        vals = [b["latency_ms"][s] for b in bodies if s in b["latency_ms"]]
        out["stages_ms"][s] = {"p50": pct(vals, 50), "p99": pct(vals, 99)}
    return out


def component_benchmarks(run: dict, triton_url: str, milvus_uri: str, n: int = 200) -> dict:
    import torch
    import tritonclient.grpc as grpcclient

    from serving.index import ItemIndex
    from training.export.onnx_export import ort_session

    torch.set_num_threads(1)
    layout, d = run["layout"], run["manifest"]["dims"]
    res: dict = {}
    enc_sess = ort_session(layout.encoder_onnx, threads=1)
    lw = run["model"].lightweight.eval()
    rng = np.random.default_rng(0)
    for b in (1, 32):
        t = d["long_len"]
        x = rng.standard_normal((b, t, d["d_item"])).astype(np.float32)
        m = np.ones((b, t), np.float32)
        xt, mt = torch.from_numpy(x), torch.from_numpy(m)
        reps = n if b == 1 else max(20, n // 5)
        with torch.no_grad():
            eager = timeit(lambda: lw(xt, mt), reps)
        onnx = timeit(lambda: enc_sess.run(None, {"history_emb": x, "history_mask": m}), reps)
        res[f"encoder_b{b}"] = {"torch_eager_p50_ms": pct(eager, 50), "ort_p50_ms": pct(onnx, 50),
                                "speedup_p50": pct(eager, 50) / pct(onnx, 50), "T": t, "threads": 1}
    llm_sess = ort_session(layout.llm_onnx, threads=1)
    feeds = {"coarse": rng.standard_normal((1, d["n_coarse"], d["d_llm"])).astype(np.float32),
             "recent_emb": rng.standard_normal((1, d["recent_n"], d["d_item"])).astype(np.float32),
             "recent_mask": np.ones((1, d["recent_n"]), np.float32)}
    client = grpcclient.InferenceServerClient(triton_url)
    inputs = []
    for name, arr in feeds.items():
        t_ = grpcclient.InferInput(name, list(arr.shape), "FP32")
        t_.set_data_from_numpy(arr)
        inputs.append(t_)
    trit = timeit(lambda: client.infer("llm", inputs), n)
    local = timeit(lambda: llm_sess.run(None, feeds), n)
    client.close()
    res["llm_b1"] = {"triton_grpc_p50_ms": pct(trit, 50), "triton_grpc_p99_ms": pct(trit, 99),
                     "ort_in_process_p50_ms": pct(local, 50), "ort_in_process_p99_ms": pct(local, 99)}
    index = ItemIndex(milvus_uri).start()
    q = rng.standard_normal((d["n_interests"], d["d_out"])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    reps = max(20, n // 5)
    one = timeit(lambda: index.search(q, 60), reps, warmup=2)
    each = timeit(lambda: index.search_each(q, 60), reps, warmup=2)
    index.close()
    res["milvus_K%d" % d["n_interests"]] = {"one_search_nq_K_p50_ms": pct(one, 50), "K_searches_p50_ms": pct(each, 50),
                                            "n_items": int(len(run["vectors"]) - 1)}
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000], help="index sizes, one full run each")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--app-workers", type=int, default=1, help="uvicorn worker processes for the app")
    parser.add_argument("--triton-instances", type=int, default=1, help="instance_group count of the LLM model")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench-serving"))
    parser.add_argument("--out", default=None, help="all results as JSON (default <workdir>/result.json)")
    parser.add_argument("--ann-run", default=None,
                        help="a trained window run: ANN recall on its real item vectors and users' interests")
    parser.add_argument("--record", default=None, help="write the results page record (bench/records/serving.json)")
    args = parser.parse_args(argv)

    import logging
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    results = {"sizes": [run_one(n, args, Path(args.workdir) / f"{n}") for n in args.items]}
    if args.ann_run:
        from bench.ann_recall import run_recall

        results["ann_trained_run"] = run_recall(Path(args.ann_run), Path(args.workdir) / "ann-recall", k=60,
                                                efs=[60, 128], max_users=500)
    out = Path(args.out) if args.out else Path(args.workdir) / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"[bench] wrote {out}")
    if args.record:
        from bench.serving_record import write_record

        command = "python bench/serving.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_record(results, Path(args.record), command)
        print(f"[bench] wrote {args.record}")
    return 0


def run_one(n_items: int, args, work: Path) -> dict:
    """The whole stack over an index of n_items: load at each concurrency, then the component comparisons."""
    import shutil

    from serving.triton_server import TritonServer
    from devservices.milvus_standalone import MilvusStandalone
    from devservices.serving_run import make_serving_run, open_test_store, user_states
    from training.export.triton_repo import add_version, llm_spec

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    run = make_serving_run(work / "run", n_items=n_items, n_users=args.users, codebook_size=64)
    print(f"[bench] run with {n_items} items built in {run['seconds']:.1f}s", flush=True)
    d = run["manifest"]["dims"]
    repo = run["layout"].triton_repo / "local"
    add_version(repo, run["layout"].llm_onnx, llm_spec(d["n_coarse"], d["d_llm"], d["d_item"], d["n_interests"], d["d_out"],
                                                          instance_count=args.triton_instances))
    store, store_cfg = open_test_store(work / "feast")
    store.write_users(user_states(run))
    store.close()
    with contextlib.ExitStack() as services:  # every server stopped, whatever fails
        triton = TritonServer(repo, ["llm"], log_path=work / "triton.log").start()
        services.callback(triton.stop)
        print(f"[bench] tritonserver ready in {triton.ready_seconds:.2f}s", flush=True)
        milvus = MilvusStandalone(work / "milvus").start()
        services.callback(milvus.stop)
        result = measure_stack(run, args, store_cfg, triton, milvus)
    result["total_s"] = time.perf_counter() - t0
    from bench.serving_record import markdown_table

    print(markdown_table([result]))
    return result


def measure_stack(run: dict, args, store_cfg: str, triton, milvus) -> dict:
    from bench.ann_recall import measure_index
    from serving.triton_server import free_port
    from serving.config import ServingConfig
    from serving.index import ItemIndex

    vectors = np.load(run["layout"].item_vectors)
    index = ItemIndex(milvus.uri).start(load=False)
    built = index.build(vectors)
    index.close()
    print(f"[bench] Milvus index {built.collection}: {built.n_items} items in {built.seconds:.1f}s", flush=True)
    picks = np.random.default_rng(1).choice(np.arange(1, len(vectors)), 300, replace=False)
    ann = measure_index(milvus.uri, vectors, vectors[picks], 60, sorted({60, ServingConfig.milvus_ef}))
    for row in ann:
        print(f"[bench] ANN ef {row['ef']}: recall@60 {row['recall']:.4f}, p50 {row['p50_ms']:.2f} ms", flush=True)
    port = free_port()
    env = dict(os.environ, HYMIREC_ARTIFACT_DIR=str(run["layout"].root), HYMIREC_TRITON_URL=triton.grpc_url,
               HYMIREC_MILVUS_URI=milvus.uri, HYMIREC_FEAST_REPO=store_cfg, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    app = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--host",
                            "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
                            "--workers", str(args.app_workers)],
                           env=env, cwd=str(ROOT), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    n_items = len(vectors) - 1
    result: dict = {"n_items": n_items, "k": args.k, "cpu_count": os.cpu_count(), "load": [], "ann": ann,
                    "app_workers": args.app_workers, "triton_instances": args.triton_instances,
                    "index_build_s": built.seconds, "milvus": "standalone 2.3.5, HNSW M=16 efConstruction=128, "
                    f"ef {ServingConfig.milvus_ef}, {ServingConfig.milvus_consistency} consistency"}
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if app.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("app did not become ready")
            time.sleep(0.2)
        users = list(run["users"])
        for c in args.concurrency:
            load = run_load(url, users, c, args.requests, args.k)
            result["load"].append(load)
            print(f"[bench] c={c}: e2e p50 {load['client_e2e_ms']['p50']:.1f} ms p99 {load['client_e2e_ms']['p99']:.1f} ms "
                  f"({load['throughput_rps']:.0f} req/s) stages "
                  + ", ".join(f"{s} {v['p50']:.1f}/{v['p99']:.1f}" for s, v in load["stages_ms"].items()), flush=True)
    finally:
        app.terminate()
        app.wait(30)
    result["components"] = component_benchmarks(run, triton.grpc_url, milvus.uri)
    result["triton_ready_s"] = triton.ready_seconds
    return result


if __name__ == "__main__":
    raise SystemExit(main())
