"""bench/peers/run_state.py: the pause/resume contract the peer runners share. The runners' own resume tests
(test_peers_runner.py) need the libraries' venvs; these run everywhere."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bench.peers.run_state import CheckpointRefused, LoopCheckpoint, refusal, say_paused


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()  # Adam's moments exist: the optimizer state is not empty
    return model, optimizer


def test_loop_checkpoint_restores_weights_optimizer_loop_and_every_generator(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    loader, negatives = torch.Generator().manual_seed(3), np.random.default_rng(4)
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    loop = {"best": (0.25, 2, {k: v.clone() for k, v in model.state_dict().items()}), "history": [{"epoch": 1}],
            "train_seconds": 1.5}
    saved = LoopCheckpoint(tmp_path / "checkpoint.pt", {"dim": 8})
    saved.save(model, optimizer, loader, loop, numpy_generator=negatives)
    want = (torch.rand(2, generator=loader), torch.rand(2), np.random.rand(2), random.random(), negatives.random(2))

    other, other_optimizer = _model_and_optimizer(1)
    loader2, negatives2 = torch.Generator().manual_seed(99), np.random.default_rng(99)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    resumed = LoopCheckpoint(tmp_path / "checkpoint.pt", {"dim": 8})
    got_loop = resumed.load(other, other_optimizer, loader2, numpy_generator=negatives2)

    assert resumed.resumed == 1
    assert got_loop["best"][:2] == (0.25, 2) and got_loop["history"] == [{"epoch": 1}]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    got = (torch.rand(2, generator=loader2), torch.rand(2), np.random.rand(2), random.random(), negatives2.random(2))
    for a, b in zip(want, got):
        assert np.allclose(np.asarray(a), np.asarray(b)), "a generator was not restored"


def test_loop_checkpoint_refuses_other_settings_layouts_and_torn_files_by_name(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    path = tmp_path / "checkpoint.pt"
    assert LoopCheckpoint(path, {"dim": 8}).load(model, optimizer, torch.Generator()) is None  # nothing yet
    LoopCheckpoint(path, {"dim": 8}).save(model, optimizer, torch.Generator(), {"history": []})
    with pytest.raises(CheckpointRefused, match=r"other settings: dim \(8 vs 16\)"):
        LoopCheckpoint(path, {"dim": 16}).load(model, optimizer, torch.Generator())
    blob = torch.load(path, weights_only=True)
    del blob["loop"]  # another runner version's layout
    torch.save(blob, path)
    with pytest.raises(CheckpointRefused, match="lacks 'loop'"):
        LoopCheckpoint(path, {"dim": 8}).load(model, optimizer, torch.Generator())
    path.write_bytes(path.read_bytes()[:100])  # a write cut short
    with pytest.raises(CheckpointRefused, match="unreadable checkpoint .*checkpoint.pt"):
        LoopCheckpoint(path, {"dim": 8}).load(model, optimizer, torch.Generator())
    LoopCheckpoint(path, {"dim": 8}).remove()
    assert not path.exists()


def test_refusal_names_the_split_apart_from_the_settings(tmp_path):
    saved = {"dim": 8, "split": {"train.tsv": "a"}}
    assert refusal(tmp_path, saved, dict(saved)) is None
    why = refusal(tmp_path, saved, {"dim": 8, "split": {"train.tsv": "b"}})
    assert "split (another split)" in why and "dim" not in why


def test_pause_message_names_the_epoch_the_seconds_and_the_checkpoint(tmp_path, capsys):
    say_paused("recbole", tmp_path / "checkpoint.pt", 3612.4, epoch=42)
    say_paused("rectools", tmp_path / "checkpoint.ckpt", 59.6, epoch=3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"recbole peer: paused after epoch 42 (3612 s in this call); checkpoint {tmp_path}/checkpoint.pt: "
                      "run the same command again to resume")
    assert err[1].startswith("rectools peer: paused after epoch 3 (60 s in this call); checkpoint ")
