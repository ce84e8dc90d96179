"""ANN recall of the served Milvus index against exact search, and what each HNSW `ef` costs (issue 29).

    python -m bench.ann_recall --run runs/mech1m/window/k3-maxloss --out runs/ann-recall/result.json

The queries are what serving sends: each test user's K interest vectors from a trained window run (its own model,
item tables and test users, as the interest diagnostics compute them), one search with nq = K per user; the index
holds that run's item vectors. Recall@k = |ANN top k ∩ exact top k| / k, averaged over all queries, exact = the
inner-product ranking in numpy over the same rows the index holds. The real Milvus standalone server answers.
`measure_index` is reused by bench/serving.py for its 100k-item index.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Item ids (row numbers) of the k highest inner products, over the rows an index holds (row 0 and all-zero
    rows are never indexed). vectors [n+1, d], queries [q, d] -> [q, k] int64."""
    scores = queries @ vectors.T
    scores[:, 0] = -np.inf
    scores[:, np.abs(vectors).sum(1) == 0] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, 1).argsort(1)[:, ::-1]
    return np.take_along_axis(top, order, 1).astype(np.int64)


def recall_at_k(ann: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |ann row ∩ exact row| / k (ids; 0 = no result never matches)."""
    k = exact.shape[1]
    return float(np.mean([len(set(a[a > 0].tolist()) & set(e.tolist())) / k for a, e in zip(ann, exact)]))


def measure_index(uri: str, vectors: np.ndarray, queries: np.ndarray, k: int, efs: list[int],
                  group: int = 3) -> list[dict]:
    """For each ef: recall@k of the index behind the alias at `uri` and the latency of one search of `group`
    queries (nq = K, as served). queries [q, d] with q a multiple of group."""
    from serving.index import ItemIndex

    exact = exact_topk(vectors, queries, k)
    rows = []
    for ef in efs:
        index = ItemIndex(uri, search_params={"ef": ef}, timeout_s=30.0).start()
        try:
            index.search(queries[:group], k)  # warm the connection
            found, ms = [], []
            for start in range(0, len(queries), group):
                t = time.perf_counter()
                ids, _ = index.search(queries[start:start + group], k)
                ms.append((time.perf_counter() - t) * 1000.0)
                found.append(ids)
        finally:
            index.close()
        rows.append({"ef": int(max(ef, k)), "recall": recall_at_k(np.concatenate(found), exact),
                     "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                     "searches": len(ms), "nq": group, "k": k})
    return rows


def trained_run_queries(run_dir: Path, max_users: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The run's item vectors [n+1, d] and its test users' interests flattened to [U*K, d], and K."""
    from bench.interest_diagnostics import run_interests

    vectors, interests = run_interests(run_dir)
    if max_users:
        interests = interests[:max_users]
    u, kk, d = interests.shape
    return vectors, np.ascontiguousarray(interests.reshape(u * kk, d), np.float32), kk


def run_recall(run_dir: Path, work: Path, k: int, efs: list[int], max_users: int | None) -> dict:
    """Build the run's item index in a fresh Milvus standalone server and measure recall@k per ef."""
    import logging
    import shutil

    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    from devservices.milvus_standalone import MilvusStandalone
    from serving.index import ItemIndex

    shutil.rmtree(work / "milvus", ignore_errors=True)
    vectors, queries, kk = trained_run_queries(run_dir, max_users)
    server = MilvusStandalone(work / "milvus").start()
    try:
        index = ItemIndex(server.uri).start(load=False)
        built = index.build(vectors)
        index.close()
        rows = measure_index(server.uri, vectors, queries, k, efs, group=kk)
    finally:
        server.stop()
    return {"run": str(run_dir), "n_items": built.n_items, "dim": built.dim, "index": "HNSW M=16 efConstruction=128",
            "queries": len(queries), "interests_per_user": kk, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained window-protocol run directory")
    parser.add_argument("--k", type=int, default=60, help="top k compared (serving asks k + seen + 10 per interest)")
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--max-users", type=int, default=500)
    parser.add_argument("--out", default="runs/ann-recall/result.json")
    args = parser.parse_args(argv)

    out = Path(args.out)
    result = run_recall(Path(args.run), out.parent, args.k, args.ef, args.max_users)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for r in result["rows"]:
        print(f"ef {r['ef']:4d}: recall@{r['k']} {r['recall']:.4f}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
