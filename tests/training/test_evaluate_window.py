"""Window protocol: split, set metrics, interest coverage, ILD, equal-recall comparison, interest labels,
ML-1M-style genre parsing and the UniSRec loader's row ordering. Expected numbers are derived by hand."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from features.codebook import CodebookConfig, ResidualCodebook
from training.data import DataFormatError, InteractionData, load_dataset, synthetic, window_split
from training.evaluate_window import (
    at_equal_recall,
    evaluate_window,
    interest_coverage,
    intra_list_distance,
    window_metrics_from_topk,
    window_set_metrics,
)
from training.interest_labels import as_label_matrix, item_interest_labels

UNI_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _data(seqs: list[list[int]], n_items: int) -> InteractionData:
    sequences = [np.asarray(s, dtype=np.int64) for s in seqs]
    return InteractionData("toy", sequences, [np.arange(len(s), dtype=np.int64) for s in sequences],
                           [str(u) for u in range(len(seqs))], ["<pad>"] + [str(i) for i in range(1, n_items + 1)],
                           None)


# --------------------------------------------------------------------------- window split


def test_window_split_rule_on_a_toy_dataset() -> None:
    seqs = [list(range(1, 26)), list(range(1, 22)), list(range(1, 21)), [1, 2, 3]]  # lengths 25, 21, 20, 3
    split = window_split(_data(seqs, 25), window=10)
    # 2W + 1 = 21 items needed: users 0 (25) and 1 (21) evaluated, 2 (20) and 3 (3) are train-only.
    assert split.test.users.tolist() == [0, 1] == split.valid.users.tolist()
    assert split.train[0].tolist() == list(range(1, 6))  # 25 - 20 = 5 training items
    assert split.valid.histories[0].tolist() == list(range(1, 6))
    assert split.valid.targets[0].tolist() == list(range(6, 16))
    assert split.test.histories[0].tolist() == list(range(1, 16))  # test history includes the valid window
    assert split.test.targets[0].tolist() == list(range(16, 26))
    assert split.train[1].tolist() == [1] and split.test.targets[1].tolist() == list(range(12, 22))
    assert split.train[2].tolist() == list(range(1, 21)) and split.train[3].tolist() == [1, 2, 3]
    small = window_split(_data(seqs, 25), window=2, min_history=20)  # needs 24 items: only user 0
    assert small.test.users.tolist() == [0] and small.test.targets[0].tolist() == [24, 25]
    with pytest.raises(ValueError, match="window"):
        window_split(_data(seqs, 25), window=0)


# --------------------------------------------------------------------------- set metrics


def test_set_metrics_hand_computed() -> None:
    topk = np.array([[5, 3, 9, 7], [2, 0, 0, 0], [6, 4, 1, 2]])
    targets = [np.array([3, 7, 8, 3]), np.array([4]), np.array([6])]
    m = window_set_metrics(topk, targets, ks=(2, 4))
    # user 0: distinct T = {3, 7, 8}; hits at 0-based positions 1 (item 3) and 3 (item 7).
    #   @2: recall 1/3; DCG = 1/log2(3); IDCG = 1 + 1/log2(3) (min(3, 2) = 2 ideal positions).
    #   @4: recall 2/3; DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3) + 1/log2(4) (3 ideal positions).
    # user 1: padded list, target 4 never retrieved → 0 everywhere.
    # user 2: target 6 at position 0 → recall = NDCG = HR = 1 at both cut-offs.
    l3, l5 = 1 / math.log2(3), 1 / math.log2(5)
    assert m["users"] == 3
    assert m["Recall@2"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["Recall@4"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert m["NDCG@2"] == pytest.approx((l3 / (1 + l3) + 0 + 1) / 3)
    assert m["NDCG@4"] == pytest.approx(((l3 + l5) / (1 + l3 + 0.5) + 0 + 1) / 3)
    assert m["HR@2"] == pytest.approx(2 / 3) and m["HR@4"] == pytest.approx(2 / 3)


def test_set_metrics_padding_never_hits_and_bad_input_is_named() -> None:
    m = window_set_metrics(np.array([[-1, -1, 4]]), [np.array([4, 9])], ks=(2, 3))
    assert m["Recall@2"] == 0.0 and m["Recall@3"] == 0.5  # -1 padding is not a target match
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    with pytest.raises(ValueError, match="repeats an item"):
        window_set_metrics(np.array([[4, 4, 1]]), [np.array([4])], ks=(2,))
    with pytest.raises(ValueError, match="list length 3"):
        window_set_metrics(np.array([[4, 5, 1]]), [np.array([4])], ks=(5,))
    with pytest.raises(ValueError, match="non-empty"):
        window_set_metrics(np.array([[4, 5, 1]]), [np.array([], np.int64)], ks=(2,))


# --------------------------------------------------------------------------- coverage and ILD


def test_interest_coverage_hand_computed_multi_label() -> None:
    # items 1..5 → labels: 1: {0, 1}, 2: {2}, 3: {}, 4: {1}, 5: {3}; row 0 = padding.
    per_item = [[], [0, 1], [2], [], [1], [3]]
    topk = np.array([[4, 2, 1, 3], [5, 3, 0, 0], [5, 4, 2, 0]])
    targets = [np.array([1, 5]), np.array([3]), np.array([2, 4])]
    # user 0: I(T) = {0,1,3}; top-1 {1} → 1/3; top-2 {1,2} → 1/3; top-3 {0,1,2} → 2/3.
    # user 1: I(T) = {} (item 3 unlabelled) → left out of coverage; its lists show 1, 1, 1 interests.
    # user 2: I(T) = {1,2}; top-1 {3} → 0; top-2 {3,1} → 1/2; top-3 {3,1,2} → 1.
    expected = {"Coverage@1": (1 / 3 + 0) / 2, "Coverage@2": (1 / 3 + 1 / 2) / 2, "Coverage@3": (2 / 3 + 1) / 2,
                "Interests@1": 3 / 3, "Interests@2": (2 + 1 + 2) / 3, "Interests@3": (3 + 1 + 3) / 3,
                "target_interests": (3 + 0 + 2) / 3, "coverage_users": 2}
    matrix = as_label_matrix(per_item, 6)
    assert matrix.shape == (6, 4) and matrix[1].tolist() == [True, True, False, False]
    for form in (per_item, matrix, csr_matrix(matrix)):  # every accepted form gives the same numbers
        got = interest_coverage(topk, targets, form, ks=(1, 2, 3))
        assert got == pytest.approx(expected)


def test_interest_coverage_single_label_array_and_bad_rows() -> None:
    labels = np.array([-1, 0, 0, 1, 1])  # one label per item, -1 = padding
    got = interest_coverage(np.array([[1, 2], [3, 1]]), [np.array([3, 4]), np.array([2, 4])], labels, ks=(1, 2))
    # user 0: I(T) = {1}, list {0} then {0} → 0, 0. user 1: I(T) = {0, 1}: {1} → 1/2, {1, 0} → 1.
    assert got["Coverage@1"] == pytest.approx(0.25) and got["Coverage@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no label row"):
        interest_coverage(np.array([[1, 7]]), [np.array([1])], labels, ks=(2,))


def test_intra_list_distance_hand_computed() -> None:
    vecs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # item 3 at 45° from 1 and 2
    got = intra_list_distance(np.array([[1, 2, 3], [1, 0, 0]]), vecs, ks=(2, 3))
    # user 0: @2 one pair (1,2), cos 0 → ILD 1; @3 pairs cos 0, 1/√2, 1/√2 → 1 - √2/3.
    # user 1 has a single item, no pair → left out of both means.
    assert got["ILD@2"] == pytest.approx(1.0)
    assert got["ILD@3"] == pytest.approx(1 - math.sqrt(2) / 3)


def test_at_equal_recall_interpolates_hand_computed() -> None:
    a = {"Recall@20": 0.2, "Recall@50": 0.4, "Recall@100": 0.6,
         "Coverage@20": 0.5, "Coverage@50": 0.7, "Coverage@100": 0.8}
    b = {"Recall@20": 0.1, "Recall@50": 0.3, "Recall@100": 0.5,
         "Coverage@20": 0.6, "Coverage@50": 0.8, "Coverage@100": 0.9}
    rows = at_equal_recall(a, b, ks=(20, 50, 100))
    # A@20 recall 0.2: halfway between B@20 (0.1, cov 0.6) and B@50 (0.3, cov 0.8) → cov 0.7 at K' = 35.
    # A@50 recall 0.4: halfway between B@50 and B@100 → cov 0.85 at K' = 75. A@100 recall 0.6 > B's max → None.
    assert [r["K"] for r in rows] == [20, 50, 100]
    assert rows[0]["b"] == pytest.approx(0.7) and rows[0]["b_K"] == pytest.approx(35.0) and rows[0]["a"] == 0.5
    assert rows[1]["b"] == pytest.approx(0.85) and rows[1]["b_K"] == pytest.approx(75.0)
    assert rows[2]["b"] is None and rows[2]["recall"] == 0.6
    with pytest.raises(ValueError, match="lacks ILD@20"):
        at_equal_recall(a, b, ks=(20, 50, 100), measure="ILD")


# --------------------------------------------------------------------------- the entry point (serving merge)


def test_evaluate_window_two_interests_cover_both_and_targets_stay_rankable() -> None:
    # items 1-3 point along x (label 0), items 4-6 along y (label 1), shrinking: 1.0, 0.9, 0.8.
    vecs = np.array([[0, 0], [1, 0], [0.9, 0], [0.8, 0], [0, 1], [0, 0.9], [0, 0.8]], dtype=np.float32)
    labels = np.array([-1, 0, 0, 0, 1, 1, 1])
    hist = [np.array([1, 4, 2])]  # item 2 is in the history AND the window (re-consumed): never masked
    targets = [np.array([2, 5])]
    two = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)  # [U=1, K=2, d=2]
    # max merge, history {1, 4} masked: 2 (0.9), 5 (0.9; tie → smaller id after 2), 3, 6 → top-2 = [2, 5].
    m2 = evaluate_window(two, vecs, hist, targets, labels, ks=(1, 2))
    assert m2["Recall@1"] == 0.5 and m2["Recall@2"] == 1.0 and m2["NDCG@2"] == pytest.approx(1.0)
    assert m2["Coverage@1"] == 0.5 and m2["Coverage@2"] == 1.0
    assert m2["ILD@2"] == pytest.approx(1.0)  # orthogonal items
    # one interest along x: 2 (0.9), 3 (0.8), then y items at score 0 → top-2 = [2, 3]: one interest only.
    m1 = evaluate_window(two[:, :1], vecs, hist, targets, labels, ks=(1, 2))
    assert m1["Recall@2"] == 0.5 and m1["Coverage@2"] == 0.5 and m1["ILD@2"] == pytest.approx(0.0)
    # the same numbers from ranked lists (the path for score-based models and baselines)
    from_lists = window_metrics_from_topk(np.array([[2, 5]]), targets, labels, vecs, ks=(1, 2))
    assert from_lists == pytest.approx(m2, nan_ok=True)  # ILD@1 is NaN in both: a 1-item list has no pair


# --------------------------------------------------------------------------- interest labels per dataset


def test_synthetic_planted_interests_are_exposed() -> None:
    data = synthetic(n_users=30, n_items=60, n_interests=4, seed=1, long_users=1, long_length=100)
    labels = item_interest_labels(data)
    assert labels.source == "planted" and labels.n_labels == 4
    assert labels.matrix.shape == (61, 4) and not labels.matrix[0].any()
    assert (labels.matrix[1:].sum(axis=1) == 1).all()  # one planted topic per item
    assert labels.matrix[1:].argmax(axis=1).tolist() == data.item_categories[1:].tolist()
    # an oracle list made of one planted topic's items covers exactly that topic of a two-topic window
    t0 = np.flatnonzero(data.item_categories == 0)[:3]
    t1 = np.flatnonzero(data.item_categories == 1)[:1]
    cov = interest_coverage(np.array([t0]), [np.concatenate([t0[:1], t1])], labels, ks=(3,))
    assert cov["Coverage@3"] == 0.5


def test_ml1m_style_item_genres_are_parsed(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ml-1m.inter").write_text(  # timestamp = rank in the user's sequence; rows out of file order
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "1\t3186\t1\n1\t1\t0\n1\t2\t2\n2\t2\t0\n2\t999\t1\n")
    (folder / "ml-1m.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tJumanji\t1995\tAdventure Children's Fantasy\n"
        "3186\tGirl, Interrupted\t1999\tDrama\n")
    data = load_dataset(folder)
    raw = [[data.item_ids[i] for i in s] for s in data.sequences]
    assert raw == [["1", "3186", "2"], ["2", "999"]]  # ordered by rank
    idx = {r: i for i, r in enumerate(data.item_ids)}
    assert data.item_texts[idx["1"]] == "Toy Story (1995) | Animation, Children's, Comedy"
    assert data.item_tags[idx["3186"]] == ("Drama",) and data.item_tags[idx["999"]] == ()  # 999: no .item row
    labels = item_interest_labels(data)
    assert labels.source == "item_file_categories"
    assert labels.names == ["Adventure", "Animation", "Children's", "Comedy", "Drama", "Fantasy"]
    assert [labels.names[j] for j in np.flatnonzero(labels.matrix[idx["2"]])] == ["Adventure", "Children's",
                                                                                  "Fantasy"]
    assert not labels.matrix[idx["999"]].any() and not labels.matrix[0].any()


def test_codebook_clusters_when_no_categories() -> None:
    data = _data([[1, 2, 3, 4, 5, 6, 7, 8]], 8)  # no planted topics, no .item categories
    with pytest.raises(ValueError, match="pass its codebook"):
        item_interest_labels(data)
    codes = np.array([[0, 0]] + [[i % 3, 1] for i in range(8)])
    from_codes = item_interest_labels(data, codebook=codes)
    assert from_codes.source == "codebook_layer0"
    assert from_codes.matrix[1:].argmax(axis=1).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    emb = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    book = ResidualCodebook.fit(emb[1:], CodebookConfig(n_layers=2, codebook_size=2, kmeans_iters=5))
    fitted = item_interest_labels(data, codebook=book, item_embeddings=emb)
    assert fitted.matrix[1:].argmax(axis=1).tolist() == book.encode(emb[1:])[:, 0].astype(int).tolist()
    with pytest.raises(ValueError, match="item_embeddings"):
        item_interest_labels(data, codebook=book)


# --------------------------------------------------------------------------- UniSRec: rows in any order


def test_unisrec_rows_in_any_order(tmp_path: Path) -> None:
    # user u's train rows reversed (the longest prefix first): rejected before this fix.
    (tmp_path / "G.train.inter").write_text(UNI_HEADER + "u\t1 2\t3\nv\t7\t8\nu\t1\t2\n")
    (tmp_path / "G.valid.inter").write_text(UNI_HEADER + "u\t1 2 3\t4\nv\t7 8\t9\n")
    (tmp_path / "G.test.inter").write_text(UNI_HEADER + "u\t1 2 3 4\t5\nv\t7 8 9\t10\n")
    data = load_dataset(tmp_path)
    assert [[data.item_ids[i] for i in s] for s in data.sequences] == [["1", "2", "3", "4", "5"],
                                                                       ["7", "8", "9", "10"]]


def test_unisrec_truncated_rows_out_of_order_and_timestamp_column(tmp_path: Path) -> None:
    # histories truncated to 2 items: lengths tie, so the chain (and not the length) must decide the order
    (tmp_path / "T.train.inter").write_text(UNI_HEADER + "u\t3 4\t5\nu\t1\t2\nu\t2 3\t4\nu\t1 2\t3\n")
    data = load_dataset(tmp_path / "T")
    assert [data.item_ids[i] for i in data.sequences[0]] == ["1", "2", "3", "4", "5"]
    # a timestamp column states the order outright; by history length alone this file would not chain
    (tmp_path / "S.train.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float\n"
                                            "u\t1 1\t1\t30\nu\t1\t1\t20\nu\t2\t1\t10\n")
    data = load_dataset(tmp_path / "S")
    assert [data.item_ids[i] for i in data.sequences[0]] == ["2", "1", "1", "1"]
    (tmp_path / "B.train.inter").write_text(UNI_HEADER + "u\t1\t2\nu\t5 6\t7\n")  # still rejected: no chain
    with pytest.raises(DataFormatError, match="B.train.inter:3: history of user 'u' does not continue"):
        load_dataset(tmp_path / "B")
