"""Dataset arguments of the bench: checked before anything trains; `all`; published reference rows."""
from __future__ import annotations

import pytest
from peer_support import write_tiny_dataset

from bench.datasets import (DEFAULT_DATASETS, BenchDataset, UnsupportedDatasetError, default_data_dir,
                                     published_rows, resolve_datasets)


def test_unsupported_folder_is_a_clear_error(tmp_path):
    bad = tmp_path / "csv-only"
    bad.mkdir()
    (bad / "ratings.csv").write_text("user,item\n1,2\n")
    with pytest.raises(UnsupportedDatasetError, match=r"csv-only' cannot be read: .*unknown layout: no '.inter'.*Supported layouts: RecBole"):
        resolve_datasets([str(bad)], tmp_path, log=lambda *_: None)


def test_malformed_file_and_missing_path_are_clear_errors(tmp_path):
    (tmp_path / "Broken.txt").write_text("1 2 x\n")
    with pytest.raises(UnsupportedDatasetError, match=r"Broken.txt' cannot be read: .*Broken.txt:1: .*Supported layouts"):
        resolve_datasets([str(tmp_path / "Broken.txt")], tmp_path, log=lambda *_: None)
    with pytest.raises(UnsupportedDatasetError, match="'nowhere/at-all': no such file or folder"):
        resolve_datasets(["nowhere/at-all"], tmp_path, log=lambda *_: None)


def test_supported_folder_file_and_name(tmp_path):
    write_tiny_dataset(tmp_path / "tiny")
    by_path = resolve_datasets([str(tmp_path / "tiny")], tmp_path, log=lambda *_: None)
    by_name = resolve_datasets(["tiny"], tmp_path, log=lambda *_: None)  # a name under the data directory
    assert [d.key for d in by_path] == [d.key for d in by_name] == ["tiny"]
    assert by_path[0].users == 40 and by_path[0].items <= 30 and not by_path[0].has_text
    assert by_path[0].item_representation == "item_id_embedding"


def test_all_expands_multi_dataset_folders_and_skips_unloadable(tmp_path):
    write_tiny_dataset(tmp_path / "s3rec", "Alpha")
    write_tiny_dataset(tmp_path / "s3rec", "Beta", seed=1)
    write_tiny_dataset(tmp_path / "single", "Gamma", seed=2)
    (tmp_path / "docs-only").mkdir()
    (tmp_path / "docs-only" / "README.md").write_text("no data here")
    logs = []
    datasets = resolve_datasets(["all"], tmp_path, log=logs.append)
    assert [d.key for d in datasets] == ["Alpha", "Beta", "single"]
    assert any("skipping docs-only" in line for line in logs)


def test_name_clash_is_an_error(tmp_path):
    write_tiny_dataset(tmp_path / "a" / "same")
    write_tiny_dataset(tmp_path / "b" / "same")
    with pytest.raises(UnsupportedDatasetError, match="share the name 'same'"):
        resolve_datasets([str(tmp_path / "a" / "same"), str(tmp_path / "b" / "same")], tmp_path, log=lambda *_: None)


def _ds(key, users, items, has_text=False):
    return BenchDataset(key=key, spec=key, users=users, items=items, interactions=0, has_text=has_text)


def test_published_rows_only_for_their_datasets():
    rows = published_rows(_ds("Beauty", 22363, 12101))
    assert {r["label"] for r in rows} == {"SASRec (published)", "BERT4Rec (published)", "S3-Rec (published)"}
    sasrec = next(r for r in rows if r["label"] == "SASRec (published)")
    assert (sasrec["Recall@10"], sasrec["NDCG@10"]) == (0.0605, 0.0318) and sasrec["kind"] == "published"
    assert published_rows(_ds("Toys_and_Games", 19412, 11924))[0]["Recall@10"] == 0.0675
    assert published_rows(_ds("Sports_and_Outdoors", 35598, 18357))[0]["NDCG@10"] == 0.0192
    assert published_rows(_ds("ml-100k", 943, 1682, True)) == []
    assert published_rows(_ds("Beauty", 500, 300)) == []  # another file that happens to be called Beauty


@pytest.mark.skipif(not (default_data_dir() / "s3rec-amazon-yelp-lastfm").is_dir(), reason="no ../shared/data")
def test_default_datasets_load_and_get_their_published_rows():
    datasets = resolve_datasets(None, log=lambda *_: None)
    assert [d.key for d in datasets] == ["ml-100k", "ml-1m", "amazon-games-2018", "Beauty", "Sports_and_Outdoors",
                                         "Toys_and_Games"] == [d.split("/")[-1] for d in DEFAULT_DATASETS]
    assert [bool(published_rows(d)) for d in datasets] == [False, False, False, True, True, True]
    assert [d.has_text for d in datasets] == [True, True, True, False, False, False]
    ml1m = datasets[1]  # the long-history set (../shared/data/ml-1m/README.md)
    assert (ml1m.users, ml1m.items, ml1m.interactions) == (6040, 3706, 1000209)
