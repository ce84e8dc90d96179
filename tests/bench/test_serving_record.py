"""The serving benchmark's results-page record: every figure lands in its column, and the goals of issue 29 are
judged from the numbers (met / NOT met at the thresholds)."""
from __future__ import annotations

import json


def _size(n_items: int, p99_c1: float, rps_c8: float, recall: float) -> dict:
    stages = {s: {"p50": 1.0, "p99": 2.0} for s in ("fetch", "decode", "encode", "refine", "search", "merge", "total")}
    load = lambda c, p99, rps: {"concurrency": c, "requests": 100, "throughput_rps": rps, "non_200": 0,  # noqa: E731
                                "client_e2e_ms": {"p50": 5.0, "p99": p99}, "stages_ms": stages}
    return {"n_items": n_items, "k": 10, "load": [load(1, p99_c1, 80.0), load(8, 3 * p99_c1, rps_c8)],
            "ann": [{"ef": 60, "recall": recall - 0.04, "p50_ms": 2.0}, {"ef": 128, "recall": recall, "p50_ms": 2.5}],
            "index_build_s": 17.0,
            "components": {"encoder_b1": {"ort_p50_ms": 0.1, "torch_eager_p50_ms": 0.3},
                           "encoder_b32": {"ort_p50_ms": 2.1, "torch_eager_p50_ms": 2.3},
                           "llm_b1": {"triton_grpc_p50_ms": 1.4, "triton_grpc_p99_ms": 2.0,
                                      "ort_in_process_p50_ms": 0.1, "ort_in_process_p99_ms": 0.2},
                           "milvus_K3": {"one_search_nq_K_p50_ms": 2.4, "K_searches_p50_ms": 6.7}}}


def test_record_has_a_column_per_size_and_judges_the_goals(tmp_path):
    from bench.serving_record import write_record

    trained = {"run": "runs/x", "n_items": 3384, "queries": 1500, "interests_per_user": 3,
               "rows": [{"ef": 60, "recall": 0.9864}, {"ef": 128, "recall": 0.9991}]}
    results = {"sizes": [_size(100_000, 18.7, 192.0, 0.9857), _size(1_000_000, 40.0, 90.0, 0.93)],
               "ann_trained_run": trained}
    record = write_record(results, tmp_path / "serving.json", "python bench/serving.py --items 100000 1000000")
    assert json.loads((tmp_path / "serving.json").read_text()) == record
    assert record["columns"] == ["figure", "100,000 items", "1,000,000 items"]
    rows = {r[0]: r[1:] for r in record["rows"]}
    assert rows["/recommend end to end p50 / p99 ms, concurrency 1"] == ["5.0 / 18.7", "5.0 / 40.0"]
    assert rows["throughput req/s, concurrency 1 / 8"] == ["80 / 192", "80 / 90"]
    assert rows["ANN recall@60 vs exact, HNSW ef 128 (search p50 ms)"] == ["0.9857 (2.5)", "0.9300 (2.5)"]
    assert rows["Milvus p50 ms, one search (nq = K) vs K searches"] == ["2.4 vs 6.7", "2.4 vs 6.7"]
    # goals read from the 100k column only (1M is the cost curve)
    assert "p99 18.7 ms at concurrency 1 (goal ≤ 30 ms: met; stretch 15 ms not met)" in record["reading"]
    assert "recall@60 0.9857 at the served ef 128 (goal ≥ 0.95: met)" in record["reading"]
    assert "192 requests/s at concurrency 8 (goal ≥ 100: met)" in record["reading"]
    assert "ef 60: 0.9864, ef 128: 0.9991" in record["reading"]


def test_missed_goals_say_not_met(tmp_path):
    from bench.serving_record import write_record

    record = write_record({"sizes": [_size(100_000, 31.0, 99.0, 0.94)]}, tmp_path / "s.json", "cmd")
    assert record["reading"].count("NOT met") == 3
