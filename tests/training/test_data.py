"""Loaders (every layout, every malformed-input class), synthetic generator, leave-one-out."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from training.data import (
    DataFormatError,
    InteractionData,
    dataset_summary,
    leave_one_out,
    load_dataset,
    synthetic,
)

RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "7\t50\t3\t300\n"
    "7\t10\t4\t100\n"
    "9\t10\t5\t50\n"
    "7\t30\t1\t100\n"  # same timestamp as (7, 10): file order must be kept
    "9\t20\t2\t10\n"
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Comedy\n"
    "20\tHeat\t1995\tAction\n"
    "30\tFargo\t\tCrime Drama\n"
    "50\tAlien\t1979\tSci-Fi\n"
)
UNI_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- valid layouts


def test_recbole_atomic(tmp_path: Path) -> None:
    _write(tmp_path, "toy.inter", RECBOLE_INTER)
    _write(tmp_path, "toy.item", RECBOLE_ITEM)
    data = load_dataset(tmp_path)
    assert data.name == "toy"
    assert data.user_ids == ["7", "9"]
    assert data.item_ids == ["<pad>", "10", "20", "30", "50"]  # numeric raw ids keep numeric order
    raw = lambda u: [data.item_ids[i] for i in data.sequences[u]]  # noqa: E731
    assert raw(0) == ["10", "30", "50"]  # sorted by time, tie (100) keeps file order
    assert raw(1) == ["20", "10"]
    assert data.timestamps[0].tolist() == [100, 100, 300]
    assert data.item_texts[1] == "Toy Story (1995) | Animation, Comedy"
    assert data.item_texts[3] == "Fargo | Crime, Drama"  # empty year is skipped
    assert data.has_text and data.n_items == 4
    frame = data.to_frame()
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "order"]
    assert frame["item_id"].tolist() == ["10", "30", "50", "20", "10"]
    assert frame["order"].tolist() == [0, 1, 2, 0, 1]


def test_recbole_file_path_and_no_item_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "toy.inter", "user_id:token\titem_id:token\na\tx\na\ty\nb\tx\n")
    data = load_dataset(path)
    assert data.item_texts is None and not data.has_text
    assert data.item_ids == ["<pad>", "x", "y"]  # non-numeric ids: first-appearance order
    assert data.timestamps[0].tolist() == [0, 1]  # no timestamp column → order index


def test_unisrec_layout_rebuilds_full_sequence(tmp_path: Path) -> None:
    _write(tmp_path, "G.valid.inter", UNI_HEADER + "0\t5 6 7\t8\n1\t1 2\t3\n")
    _write(tmp_path, "G.test.inter", UNI_HEADER + "0\t6 7 8\t9\n1\t1 2 3\t4\n")  # user 0 truncated
    _write(tmp_path, "G.item", "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tGame {i}\n" for i in range(1, 10)))
    for arg in (tmp_path, tmp_path / "G.test.inter", tmp_path / "G"):
        data = load_dataset(arg)
        raw = [[data.item_ids[i] for i in s] for s in data.sequences]
        assert raw == [["5", "6", "7", "8", "9"], ["1", "2", "3", "4"]]
        assert data.item_texts[data.item_ids.index("7")] == "Game 7"


def test_unisrec_train_rows_are_chained(tmp_path: Path) -> None:
    _write(tmp_path, "G.train.inter", UNI_HEADER + "u\t1\t2\nu\t1 2\t3\n")
    _write(tmp_path, "G.valid.inter", UNI_HEADER + "u\t1 2 3\t4\n")
    _write(tmp_path, "G.test.inter", UNI_HEADER + "u\t1 2 3 4\t5\n")
    data = load_dataset(tmp_path)
    assert [data.item_ids[i] for i in data.sequences[0]] == ["1", "2", "3", "4", "5"]


def test_s3rec_sequence_layout(tmp_path: Path) -> None:
    _write(tmp_path, "Beauty.txt", "1 1 2 3\n2 4 2\n\n3 5 1 1\n")
    _write(tmp_path, "Beauty_sample.txt", "not a dataset\n")  # S3-Rec negatives file is ignored
    data = load_dataset(tmp_path)
    assert data.sequences[0].tolist() == [1, 2, 3]
    assert data.sequences[2].tolist() == [5, 1, 1]
    assert dataset_summary(data) == {
        "name": "Beauty", "users": 3, "items": 5, "interactions": 8,
        "mean_length": 8 / 3, "min_length": 2, "max_length": 3, "has_text": False,
    }


def test_sasrec_pair_layout(tmp_path: Path) -> None:
    path = _write(tmp_path, "Video.txt", "1 30\n1 10\n2 20\n1 20\n")
    data = load_dataset(path)
    assert data.user_ids == ["1", "2"]
    assert [[data.item_ids[i] for i in s] for s in data.sequences] == [["30", "10", "20"], ["20"]]


def test_folder_with_several_datasets_needs_a_name(tmp_path: Path) -> None:
    _write(tmp_path, "A.txt", "1 1 2\n")
    _write(tmp_path, "B.txt", "1 3 4\n")
    with pytest.raises(DataFormatError, match="several datasets"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path / "B").name == "B"


def test_missing_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nope")


# --------------------------------------------------------------------------- malformed inputs

BAD_CASES = [
    # (file name, content, expected line, fragment of the problem)
    ("x.inter", "", 0, "empty"),
    ("x.inter", "user_id:token\titem_id:token\n", 0, "no data rows"),
    ("x.inter", "user_id:token\trating:float\n1\t2\n", 1, "missing column(s) item_id"),
    ("x.inter", "user_id\titem_id\n1\t2\n", 1, "name:type"),
    ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t5\n1\t3\n", 3, "2 tab-separated fields"),
    ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tsoon\n", 2, "timestamp 'soon' is not a number"),
    ("x.txt", "", 0, "empty"),
    ("x.txt", "1 2 3\n2 4 five\n", 2, "item id 'five' is not an integer"),
    ("x.txt", "u1 2 3\n", 1, "user id 'u1' is not an integer"),
    ("x.txt", "1 2 3\n2\n", 2, "no items"),
    ("x.txt", "1 2 3\n1 4 5\n", 2, "already has a sequence at line 1"),
    ("x.txt", "1 2\n\xff\xfe\n", 2, "UTF-8"),
    ("x.test.inter", UNI_HEADER + "1\t2 3\n", 2, "2 tab-separated fields"),
    ("x.test.inter", "user_id:token\titem_id:token\n1\t2\n", 1, "missing column(s) item_id_list"),
]


@pytest.mark.parametrize(("name", "content", "line", "problem"), BAD_CASES)
def test_bad_inputs_raise_data_format_error(tmp_path: Path, name: str, content: str, line: int, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    before = _snapshot(tmp_path)
    with pytest.raises(DataFormatError) as info:
        load_dataset(path)
    err = info.value
    assert err.path == str(path) and err.line == line
    assert problem in err.problem
    assert str(err).startswith(f"{path}:{line}: ")
    assert _snapshot(tmp_path) == before  # loaders never write


def test_unisrec_inconsistent_rows(tmp_path: Path) -> None:
    _write(tmp_path, "G.valid.inter", UNI_HEADER + "0\t1 2\t3\n")
    test = _write(tmp_path, "G.test.inter", UNI_HEADER + "0\t1 2 9\t4\n")
    with pytest.raises(DataFormatError) as info:
        load_dataset(tmp_path)
    assert info.value.path == str(test) and info.value.line == 2
    assert "does not continue" in str(info.value)


def test_bad_item_file_and_unknown_layouts(tmp_path: Path) -> None:
    _write(tmp_path, "toy.inter", RECBOLE_INTER)
    item = _write(tmp_path, "toy.item", RECBOLE_ITEM + "10\tDuplicate\t1990\tDrama\n")
    with pytest.raises(DataFormatError, match=rf"{item}:6: duplicate item_id '10'"):
        load_dataset(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    csv = _write(other, "data.csv", "a,b\n")
    with pytest.raises(DataFormatError, match="unknown layout"):
        load_dataset(other)
    with pytest.raises(DataFormatError, match=rf"{csv}:0: unknown layout"):
        load_dataset(csv)


def test_error_is_value_error_and_picklable() -> None:
    err = DataFormatError("f.txt", 3, "bad")
    assert isinstance(err, ValueError) and str(err) == "f.txt:3: bad"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.line, again.problem) == ("f.txt", 3, "bad")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_structured() -> None:
    a = synthetic(n_users=40, n_items=120, n_interests=4, seed=3, long_users=2, long_length=1100)
    b = synthetic(n_users=40, n_items=120, n_interests=4, seed=3, long_users=2, long_length=1100)
    c = synthetic(n_users=40, n_items=120, n_interests=4, seed=4, long_users=2, long_length=1100)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert a.item_texts == b.item_texts
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))
    lengths = [len(s) for s in a.sequences]
    assert lengths[:2] == [1100, 1100] and all(20 <= n <= 80 for n in lengths[2:])
    assert a.n_items == 120 and a.has_text and all(a.item_texts[1:]) and a.item_texts[0] == ""
    assert len(set(a.item_texts[1:])) == 120  # titles are unique
    assert a.item_categories.shape == (121,) and a.item_categories[0] == -1
    assert set(a.item_categories[1:].tolist()) == set(range(4))
    for s, t in zip(a.sequences, a.timestamps):
        assert np.all(np.diff(t) > 0)
    # Multi-interest: a typical user touches 2-3 topics (plus rare noise items).
    for s in a.sequences[2:]:
        cats, counts = np.unique(a.item_categories[s], return_counts=True)
        assert 2 <= int((counts >= 0.1 * len(s)).sum()) <= 3
    # Topic persistence: consecutive items share a topic far more often than chance (1/4).
    same = np.mean([np.mean(a.item_categories[s[1:]] == a.item_categories[s[:-1]]) for s in a.sequences])
    assert same > 0.6


def test_synthetic_defaults_have_long_users_and_titles_with_topic_words() -> None:
    data = synthetic()
    assert data.n_users == 300 and data.n_items == 400
    assert sum(len(s) >= 1000 for s in data.sequences) == 5
    topic0 = [t for t, c in zip(data.item_texts, data.item_categories) if c == 0]
    assert topic0 and all(len(t.split()) >= 4 for t in topic0)
    data.validate()


# --------------------------------------------------------------------------- leave-one-out


def test_leave_one_out() -> None:
    seqs = [np.array(s, dtype=np.int64) for s in ([1, 2, 3, 4], [5, 6], [2, 3, 5], [7])]
    data = InteractionData("t", seqs, None, ["a", "b", "c", "d"], ["<pad>"] + [str(i) for i in range(1, 8)], None)
    split = leave_one_out(data)
    assert [s.tolist() for s in split.train] == [[1, 2], [5, 6], [2], [7]]  # short users: train only
    assert split.valid.users.tolist() == [0, 2] and split.test.users.tolist() == [0, 2]
    assert [h.tolist() for h in split.valid.histories] == [[1, 2], [2]]
    assert split.valid.targets.tolist() == [3, 3]
    assert [h.tolist() for h in split.test.histories] == [[1, 2, 3], [2, 3]]
    assert split.test.targets.tolist() == [4, 5]
    assert len(split.test) == 2
    split.train[0][0] = 99  # the split owns copies: the dataset is untouched
    assert data.sequences[0][0] == 1
