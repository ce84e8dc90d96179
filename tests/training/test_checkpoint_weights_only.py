"""Checkpoints are loaded with torch.load(weights_only=True): the model.pt record written by training reloads, a
pickle that would run code is refused before it runs, and no torch.load in the project goes without the flag."""
from __future__ import annotations

import ast
import dataclasses
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _small_model():
    from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig
    from training.hybrid import HybridRecommender

    hybrid = HybridConfig(long_len=16, recent_n=4, n_interests=2, out_dim=16, item_tower_dropout=0.0,
                          lightweight=LightweightConfig(model_dim=16, n_layers=1, n_heads=2, n_coarse=2, max_len=64,
                                                        dropout=0.0),
                          llm=LLMRecommenderConfig(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64,
                                                   dropout=0.0))
    torch.manual_seed(0)
    return hybrid, HybridRecommender(hybrid, 8, 50).eval()


def test_model_record_reloads_weights_only(tmp_path):
    from core.artifacts import RunLayout
    from training.train import load_hybrid

    hybrid, model = _small_model()
    layout = RunLayout.at(tmp_path / "run").ensure()
    # The record training/train.py writes: weights, sizes and the hybrid config as a plain dict.
    torch.save({"state_dict": model.state_dict(), "item_dim": 8, "n_items": 50,
                "hybrid": dataclasses.asdict(hybrid)}, layout.model)
    loaded = load_hybrid(str(layout.root))
    saved, again = model.state_dict(), loaded.state_dict()
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


class _Payload:
    """What a poisoned model.pt would carry: unpickling it runs os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    from core.artifacts import RunLayout
    from training.train import load_hybrid

    hybrid, model = _small_model()
    layout = RunLayout.at(tmp_path / "run").ensure()
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": model.state_dict(), "item_dim": 8, "n_items": 50,
                "hybrid": dataclasses.asdict(hybrid), "extra": _Payload(marker)}, layout.model)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_hybrid(str(layout.root))
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    # The project's own files (git's list): virtualenvs and peer libraries' checkouts are not ours to change.
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert len(listed) > 50
    offenders = []
    for rel in map(Path, listed):
        if not (ROOT / rel).exists():
            continue
        for node in ast.walk(ast.parse((ROOT / rel).read_text(), str(rel))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"
