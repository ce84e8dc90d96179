"""The run config: one nested config per component, every field declared once, overrides checked by type."""
from __future__ import annotations

import dataclasses

import pytest

from features.codebook import CodebookConfig
from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig, RunConfig


def _leaf_fields(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _leaf_fields(type(default), prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
    return out


def test_sub_configs_are_nested_and_no_field_is_declared_twice():
    cfg = RunConfig()
    assert isinstance(cfg.codebook, CodebookConfig)  # the codebook's own config, not a copy of its fields
    assert (cfg.codebook.n_layers, cfg.codebook.codebook_size) == (6, 1024)
    assert isinstance(cfg.hybrid.lightweight, LightweightConfig) and isinstance(cfg.hybrid.llm, LLMRecommenderConfig)
    hybrid_fields = {f.name for f in dataclasses.fields(HybridConfig)}
    for sub in (LightweightConfig, LLMRecommenderConfig):
        assert not hybrid_fields & {f.name for f in dataclasses.fields(sub)}, sub.__name__
    assert not any(name.startswith(("light_", "llm_")) for name in hybrid_fields)
    leaves = _leaf_fields(RunConfig)
    assert len(leaves) == len(set(leaves))


def test_round_trip_through_a_dict_keeps_every_nested_value():
    cfg = RunConfig().override(["hybrid.llm.layers=4", "hybrid.lightweight.n_coarse=6", "codebook.n_layers=3"])
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert (again.hybrid.llm.layers, again.hybrid.lightweight.n_coarse, again.codebook.n_layers) == (4, 6, 3)


def test_overrides_are_checked_against_field_types():
    cfg = RunConfig().override(["train.lr=1", "hybrid.llm.path=/models/x", "train.max_eval_users=null"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # an int is a valid float
    assert cfg.hybrid.llm.path == "/models/x" and cfg.train.max_eval_users is None
    with pytest.raises(ValueError, match=r"train\.epochs: expected int, got 'ten'"):
        RunConfig().override(["train.epochs=ten"])
    with pytest.raises(ValueError, match=r"hybrid\.use_llm: expected bool, got 1"):
        RunConfig().override(["hybrid.use_llm=1"])
    with pytest.raises(ValueError, match=r"train\.epochs: expected int, got 2\.5"):
        RunConfig().override(["train.epochs=2.5"])
    with pytest.raises(ValueError, match=r"unknown field 'hybrid\.llm\.width'"):
        RunConfig().override(["hybrid.llm.width=3"])
    with pytest.raises(ValueError, match=r"'hybrid\.llm' is a section"):
        RunConfig().override(["hybrid.llm=3"])
    with pytest.raises(ValueError, match=r"'hybrid\.nope' is not a config section"):
        RunConfig().override(["hybrid.nope.x=3"])
    with pytest.raises(ValueError, match="must look like section.field=value"):
        RunConfig().override(["train.epochs"])


def test_unknown_keys_in_a_saved_config_are_named():
    raw = RunConfig().to_dict()
    raw["hybrid"]["llm"]["hiddn"] = 64
    with pytest.raises(ValueError, match=r"section 'hybrid\.llm': unknown field\(s\) \['hiddn'\]"):
        RunConfig.from_dict(raw)
