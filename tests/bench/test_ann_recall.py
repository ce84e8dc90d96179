"""ANN recall against exact search (bench/ann_recall.py): the exact ranking on hand-made vectors, the recall
arithmetic, and a measurement through a real index where the answer is known (exact FLAT search: recall 1)."""
from __future__ import annotations

import logging

import numpy as np

logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def test_exact_topk_skips_padding_and_empty_rows():
    from bench.ann_recall import exact_topk

    vectors = np.array([[9.0, 9.0],   # row 0: padding, never indexed
                        [1.0, 0.0],
                        [0.0, 0.0],   # all-zero: never indexed
                        [0.6, 0.8],
                        [0.0, 1.0]], np.float32)
    queries = np.array([[1.0, 0.1], [0.0, 1.0]], np.float32)
    # query 0 scores: item 1 = 1.0, item 3 = 0.68, item 4 = 0.1; query 1: item 4 = 1.0, item 3 = 0.8, item 1 = 0
    assert exact_topk(vectors, queries, 2).tolist() == [[1, 3], [4, 3]]


def test_recall_at_k_counts_shared_ids_and_never_the_empty_slot():
    from bench.ann_recall import recall_at_k

    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    ann = np.array([[4, 3, 9, 1], [0, 0, 5, 6]])  # 3 of 4, then 2 of 4 (0 = no result)
    assert recall_at_k(ann, exact) == (3 / 4 + 2 / 4) / 2


def test_measure_index_on_an_exact_index_is_one(tmp_path):
    from bench.ann_recall import measure_index
    from serving.index import ItemIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((801, 16)).astype(np.float32)
    vectors[0] = 0
    uri = str(tmp_path / "milvus.db")
    index = ItemIndex(uri, index_type="FLAT").start(load=False)
    try:
        index.build(vectors)
    finally:
        index.close()
    rows = measure_index(uri, vectors, rng.standard_normal((12, 16)).astype(np.float32), 20, [32], group=3)
    assert len(rows) == 1 and rows[0]["searches"] == 4 and rows[0]["nq"] == 3
    assert rows[0]["recall"] == 1.0 and rows[0]["p50_ms"] > 0
