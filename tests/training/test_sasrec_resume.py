"""training/sasrec.py: a training paused into a checkpoint resumes and ends exactly where one uninterrupted run ends
(the benchmarks train slow datasets across CPU sessions)."""
from __future__ import annotations

import pytest
import torch

from training.data import leave_one_out
from training.sasrec import SASRecConfig, train_sasrec
from training.train import load_run_data


def test_paused_and_resumed_training_equals_one_run(tmp_path):
    data = load_run_data("synthetic")
    split = leave_one_out(data)
    config = SASRecConfig(epochs=4, patience=10, dropout=0.3)  # dropout: the torch generator must be restored too
    quiet = lambda line: None  # noqa: E731
    straight, straight_info = train_sasrec(split.train, data.n_items, split.valid, config, progress=False, log=quiet)

    ckpt = tmp_path / "sasrec.ckpt"
    lines = []
    _, first = train_sasrec(split.train, data.n_items, split.valid, config, progress=False, log=lines.append,
                            checkpoint=ckpt, pause_after=0.0)  # pauses at the first epoch end
    assert first.get("paused") and len(first["epochs"]) == 1 and ckpt.is_file()
    while True:  # each call trains one more epoch and pauses, until the run ends
        model, info = train_sasrec(split.train, data.n_items, split.valid, config, progress=False,
                                   log=lines.append, checkpoint=ckpt, pause_after=0.0)
        if not info.get("paused"):
            break
    assert any("resumed after epoch 1" in line for line in lines)
    assert [e["loss"] for e in info["epochs"]] == [e["loss"] for e in straight_info["epochs"]]
    assert info["best_valid_ndcg10"] == straight_info["best_valid_ndcg10"]
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name  # the best epoch's weights, bit for bit


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    data = load_run_data("synthetic")
    split = leave_one_out(data)
    ckpt = tmp_path / "sasrec.ckpt"
    train_sasrec(split.train, data.n_items, split.valid, SASRecConfig(epochs=3), progress=False, log=lambda _: None,
                 checkpoint=ckpt, pause_after=0.0)
    _, info = train_sasrec(split.train, data.n_items, split.valid, SASRecConfig(epochs=4), progress=False,
                           log=lambda _: None, checkpoint=ckpt, pause_after=0.0)  # a higher cap: resumed
    assert len(info["epochs"]) == 2
    with pytest.raises(ValueError, match="other SASRec settings \\(lr\\): delete it"):
        train_sasrec(split.train, data.n_items, split.valid, SASRecConfig(epochs=3, lr=2e-3), progress=False,
                     log=lambda _: None, checkpoint=ckpt, pause_after=0.0)
    saved = torch.load(ckpt, weights_only=True)
    del saved["config"]["post_ln"]  # a checkpoint made before the setting existed: it trained with the default
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match="other SASRec settings \\(post_ln\\)"):
        train_sasrec(split.train, data.n_items, split.valid, SASRecConfig(epochs=3, post_ln=True), progress=False,
                     log=lambda _: None, checkpoint=ckpt, pause_after=0.0)
