"""ONNX export (dynamo, dynamic axes, external data, parity) and Triton repository generation."""
from __future__ import annotations

import shutil

import numpy as np
import pytest


def test_export_parity_report_covers_100_varied_inputs(serving_run):
    parity = serving_run["manifest"]["parity"]
    for name in ("encoder", "llm", "coarse_head"):
        rep = parity[name]
        assert rep["n_cases"] >= 100, rep
        assert rep["max_abs_diff"] <= 1e-4, rep
        assert rep["atol"] == pytest.approx(1e-4)
    # varied history lengths: from 1 up to the encoder's max length
    lo, hi = parity["encoder"]["shapes_seen"]["history_emb"]
    assert lo == 1 and hi == serving_run["manifest"]["dims"]["max_long_len"]
    lo, hi = parity["llm"]["shapes_seen"]["recent_emb"]
    assert lo == 1 and hi > 10


def test_onnx_files_have_dynamic_axes_and_external_data(serving_run, tmp_path):
    import onnx
    import onnxruntime as ort

    layout = serving_run["layout"]
    for path, names in ((layout.encoder_onnx, ("history_emb", "history_mask")),
                        (layout.llm_onnx, ("coarse", "recent_emb", "recent_mask"))):
        assert path.with_name(path.name + ".data").stat().st_size > 0
        graph = onnx.load(str(path), load_external_data=False)
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
        assert tuple(dims) == names
        assert all(isinstance(dims[n][0], str) for n in names), dims  # batch axis symbolic
        if path == layout.encoder_onnx:
            assert isinstance(dims["history_emb"][1], str) and dims["history_emb"][1] == dims["history_mask"][1]
        else:
            assert isinstance(dims["recent_emb"][1], str) and isinstance(dims["coarse"][1], int)
    # Shipping the pair elsewhere works (the data file is found next to the graph).
    moved = tmp_path / "shipped"
    moved.mkdir()
    for f in ("encoder.onnx", "encoder.onnx.data"):
        shutil.copy(layout.export_dir / f, moved / f)
    sess = ort.InferenceSession(str(moved / "encoder.onnx"), providers=["CPUExecutionProvider"])
    d = serving_run["manifest"]["dims"]
    for b, t in ((1, 1), (2, 37), (1, 200)):
        out = sess.run(None, {"history_emb": np.ones((b, t, d["d_item"]), np.float32),
                              "history_mask": np.ones((b, t), np.float32)})[0]
        assert out.shape == (b, d["n_coarse"], d["d_llm"])


def test_parity_check_fails_loudly_on_a_mismatch(serving_run):
    import copy

    import torch

    from training.export.onnx_export import ParityError, check_parity, encoder_cases

    model = serving_run["model"]
    wrong = copy.deepcopy(model.lightweight)
    with torch.no_grad():
        wrong.out.bias.add_(1e-3)  # a small drift: ONNX now differs from "PyTorch" by 1e-3
    d = serving_run["manifest"]["dims"]
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(wrong, serving_run["layout"].encoder_onnx, encoder_cases(d["d_item"], 5, d["max_long_len"]),
                     ("history_emb", "history_mask"), "encoder")


def test_failed_export_leaves_no_files(serving_run, tmp_path):
    from training.export.onnx_export import ParityError, export_coarse_head

    d = serving_run["manifest"]["dims"]
    target = tmp_path / "coarse_head.onnx"
    with pytest.raises(ParityError):
        # atol below float32 round-off: the check must fail and remove what it wrote
        export_coarse_head(serving_run["model"].llm.head, target, d["n_coarse"], d["d_llm"], n_cases=3, atol=1e-15)
    assert not target.exists() and not target.with_name("coarse_head.onnx.data").exists()


def test_triton_repository_configs(serving_run, llm_spec_, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from training.export.triton_repo import build_repo, versions

    layout = serving_run["layout"]
    written = build_repo(tmp_path / "repo", layout.llm_onnx, llm_spec_)
    assert written == {"local": 1, "production": 1}
    assert build_repo(tmp_path / "repo", layout.llm_onnx, llm_spec_) == {"local": 2, "production": 2}
    d = serving_run["manifest"]["dims"]
    for target in ("local", "production"):
        repo = tmp_path / "repo" / target
        assert versions(repo, "llm") == [1, 2]
        cfg = text_format.Parse((repo / "llm" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.name == "llm" and cfg.max_batch_size >= 8
        assert cfg.HasField("dynamic_batching")
        ins = {i.name: (list(i.dims), model_config_pb2.DataType.Name(i.data_type)) for i in cfg.input}
        assert ins == {"coarse": ([d["n_coarse"], d["d_llm"]], "TYPE_FP32"),
                       "recent_emb": ([-1, d["d_item"]], "TYPE_FP32"), "recent_mask": ([-1], "TYPE_FP32")}
        outs = {o.name: list(o.dims) for o in cfg.output}
        assert outs == {"interests": [d["n_interests"], d["d_out"]]}
        for v in (1, 2):
            vdir = repo / "llm" / str(v)
            assert (vdir / "model.onnx").exists() and (vdir / "model.onnx.data").exists()
        kinds = {model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in cfg.instance_group}
        if target == "production":
            assert cfg.backend == "onnxruntime" and cfg.platform == "onnxruntime_onnx" and kinds == {"KIND_GPU"}
            assert not (repo / "llm" / "1" / "model.py").exists()
        else:
            assert cfg.backend == "python" and kinds == {"KIND_CPU"}
            assert (repo / "llm" / "1" / "model.py").exists()
    with pytest.raises(FileExistsError):
        build_repo(tmp_path / "repo", layout.llm_onnx, llm_spec_, version=1)


def test_anchored_llm_exports_with_parity(tmp_path):
    """`anchor_last_item` lives in LLMRecommender.forward, so llm.onnx (what Triton serves) includes it."""
    import torch

    from training.config import HybridConfig, LightweightConfig, LLMRecommenderConfig
    from training.export.onnx_export import export_llm
    from training.hybrid import HybridRecommender

    torch.manual_seed(0)
    cfg = HybridConfig(n_interests=2, out_dim=8, anchor_last_item=True, next_item_weight=1.0,
                       lightweight=LightweightConfig(n_coarse=2, model_dim=16),
                       llm=LLMRecommenderConfig(hidden=32, intermediate=64))
    model = HybridRecommender(cfg, item_dim=8, n_items=20).eval()
    report = export_llm(model.llm, tmp_path / "llm.onnx", n_coarse=2, n_cases=100)
    assert report.n_cases >= 100 and report.max_abs_diff <= 1e-4
