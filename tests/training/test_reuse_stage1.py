"""stage1_from: a finished run's stage 1 is reused only for the same dataset, however its folder was named."""
import json
import os

import numpy as np
import pytest

from training.config import RunConfig
from training.item_tables import reuse_stage1


def _finished_run(run_dir, dataset: str, n_items: int = 5):
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(RunConfig(dataset=dataset, run_dir=str(run_dir)).to_dict()))
    np.save(run_dir / "item_embeddings.npy", np.ones((n_items + 1, 4), np.float32))
    (run_dir / "metrics.json").write_text(json.dumps({"item_representation": {"kind": "item_id_embedding"}}))


def test_a_relative_and_an_absolute_name_of_the_same_folder_match(tmp_path, monkeypatch):
    (tmp_path / "data" / "beauty").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "data")
    _finished_run(tmp_path / "full", "../data/beauty")  # as a per-dataset command names it
    config = RunConfig(dataset=str(tmp_path / "data" / "beauty"), stage1_from=str(tmp_path / "full"))  # a plan
    emb, record = reuse_stage1(config, n_items=5, log=lambda *_: None)
    assert emb.shape == (6, 4) and record["reused_from"] == str(tmp_path / "full")


def test_another_dataset_is_refused_by_name(tmp_path):
    for name in ("beauty", "toys"):
        (tmp_path / name).mkdir()
    _finished_run(tmp_path / "full", str(tmp_path / "beauty"))
    config = RunConfig(dataset=os.path.join(str(tmp_path), "toys"), stage1_from=str(tmp_path / "full"))
    with pytest.raises(ValueError, match="its dataset .*beauty.* differ from this run's .*toys"):
        reuse_stage1(config, n_items=5, log=lambda *_: None)
