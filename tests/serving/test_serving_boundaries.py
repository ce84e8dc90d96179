"""Layering: serving never imports training (it reads artifacts through core.artifacts.RunLayout), and stage
constructors do no I/O."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_does_not_import_training():
    code = ("import sys; import serving.app, serving.request_path, serving.stages, serving.index, serving.history, "
            "serving.config, serving.triton_server; "
            "bad = sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')); "
            "heavy = sorted(m for m in ('torch', 'pymilvus', 'feast', 'tritonclient') if m in sys.modules); "
            "print(bad, heavy); assert not bad, bad; assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_constructors_do_no_io(tmp_path):
    from serving.config import ServingConfig
    from serving.request_path import RecommendPipeline

    missing = tmp_path / "no-such-run"
    # Nothing exists at these places: constructing must still succeed (I/O happens in start()).
    pipe = RecommendPipeline(ServingConfig(artifact_dir=missing, triton_url="127.0.0.1:1",
                                           milvus_uri=str(missing / "milvus.db"), feast_repo=str(missing / "s.json")))
    assert not pipe.started and not missing.exists()
    names = [s["name"] for s in pipe.describe()]
    assert names[:3] == ["fetch", "decode", "encode"] and "search" in names and "merge" in names


def test_config_from_env():
    from serving.config import ServingConfig

    cfg = ServingConfig.from_env({"HYMIREC_ARTIFACT_DIR": "/x/run", "HYMIREC_TRITON_URL": "off",
                                  "HYMIREC_MILVUS_URI": "http://127.0.0.1:19530", "HYMIREC_FEAST_REPO": "/x/s.yaml"})
    assert str(cfg.artifact_dir) == "/x/run" and cfg.triton_url is None and cfg.port == 8080
    assert cfg.milvus == "http://127.0.0.1:19530" and cfg.feast_repo == "/x/s.yaml"
    assert ServingConfig.from_env({"HYMIREC_ARTIFACT_DIR": "/y"}).milvus == "/y/milvus.db"


def test_milvus_search_settings_from_env():
    """Bounded consistency and ef 128 by default (chosen by bench/serving.py's recall and latency); both settable,
    and a bad value is refused with the variable's name."""
    import pytest

    from serving.config import ServingConfig, ServingConfigError

    default = ServingConfig.from_env({})
    assert (default.milvus_consistency, default.milvus_ef) == ("Bounded", 128)
    cfg = ServingConfig.from_env({"HYMIREC_MILVUS_CONSISTENCY": "session", "HYMIREC_MILVUS_EF": "256"})
    assert (cfg.milvus_consistency, cfg.milvus_ef) == ("Session", 256)
    with pytest.raises(ServingConfigError, match="HYMIREC_MILVUS_CONSISTENCY"):
        ServingConfig.from_env({"HYMIREC_MILVUS_CONSISTENCY": "eventual-ish"})
    with pytest.raises(ServingConfigError, match="HYMIREC_MILVUS_EF"):
        ServingConfig.from_env({"HYMIREC_MILVUS_EF": "0"})
    with pytest.raises(ServingConfigError, match="HYMIREC_MILVUS_EF"):
        ServingConfig.from_env({"HYMIREC_MILVUS_EF": "many"})


def test_extra_items_are_named_after_the_run_and_a_bad_file_is_ignored(tmp_path):
    """serving/run_artifacts.py: the refresh DAG's extra_items.json names item indices after the run's own; it is
    re-read when it changes; a file that does not match the run (or is not JSON) is ignored, never half-read."""
    import json
    import os

    from serving.run_artifacts import EXTRA_ITEMS, Artifacts

    art = Artifacts(tmp_path)
    art.item_ids, art.titles = ["<pad>", "a", "b"], ["", "A", "B"]
    art.refresh_extra(every_s=0.0)
    assert art.name(1) == "a" and art.name(3) is None and art.name(0) is None
    (tmp_path / EXTRA_ITEMS).write_text(json.dumps({"base": 3, "ids": ["n1", "n2"]}))
    art.refresh_extra(every_s=0.0)
    assert (art.name(3), art.name(4), art.name(5)) == ("n1", "n2", None)
    assert art.extra_index_of == {"n1": 3, "n2": 4} and art.title(4) == ""
    for n, bad in enumerate((json.dumps({"base": 7, "ids": ["x"]}), "{not json", json.dumps({"ids": ["x"]}))):
        (tmp_path / EXTRA_ITEMS).write_text(bad)
        os.utime(tmp_path / EXTRA_ITEMS, ns=(10**9 * (n + 1),) * 2)  # a new mtime each time (coarse clocks)
        art.refresh_extra(every_s=0.0)
        assert (art.name(3), art.name(4)) == ("n1", "n2"), bad
    (tmp_path / EXTRA_ITEMS).unlink()
    art.refresh_extra(every_s=0.0)
    assert art.name(3) is None and art.extra_index_of == {}
