"""ONNX export of the two serving models, with a parity check that is part of the export.

    LightweightEncoder  history_emb [B, T, d_item], history_mask [B, T]        → coarse [B, K_c, d_llm]
    LLMRecommender      coarse [B, K_c, d_llm], recent_emb [B, N, d_item],
                        recent_mask [B, N]                                      → interests [B, K, d_out]
    coarse head         coarse [B, K_c, d_llm]                                  → coarse_vectors [B, K_c, d_out]
                        (the LLM's projection head applied to the coarse interests: the query vectors
                        serving falls back to when the LLM is unavailable)

Everything goes through the dynamo exporter (`torch.onnx.export(..., dynamo=True)`) with dynamic batch and
length axes. The weights always go to an external-data file `<name>.onnx.data` next to the graph: ship both.

After writing the file, the export runs the ONNX graph with onnxruntime on >= 100 random inputs of varied batch
size, length and padding and compares with PyTorch eager; any case with max |diff| > atol (1e-4) raises
:class:`ParityError` and the half-written files are removed, so a bad export never lands in a run directory.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from core.artifacts import COARSE_HEAD_ONNX, ENCODER_ONNX, EXPORT_MANIFEST, LLM_ONNX

log = logging.getLogger(__name__)

ENCODER_INPUTS = ("history_emb", "history_mask")
ENCODER_OUTPUTS = ("coarse",)
LLM_INPUTS = ("coarse", "recent_emb", "recent_mask")
LLM_OUTPUTS = ("interests",)
HEAD_INPUTS = ("coarse",)
HEAD_OUTPUTS = ("coarse_vectors",)
MAX_BATCH = 4096


class ExportError(RuntimeError):
    """The export could not produce a usable ONNX file."""


class ParityError(ExportError):
    """ONNX Runtime output differs from PyTorch by more than the tolerance."""


@dataclass
class ParityReport:
    name: str
    n_cases: int
    atol: float
    max_abs_diff: float
    worst_shapes: dict[str, list[int]]
    shapes_seen: dict[str, list[int]] = field(default_factory=dict)  # input -> [min, max] of the length axis
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.atol


# ---------------------------------------------------------------------------------------------- inputs
def _left_padded_mask(rng: np.random.Generator, b: int, t: int) -> np.ndarray:
    """[b, t] float32, 1 = real item. Right-aligned (left padding); every row has >= 1 item; the first row is
    always full and (when b > 1) the last row has exactly one item, so both extremes are covered."""
    lengths = rng.integers(1, t + 1, size=b)
    lengths[0] = t
    if b > 1:
        lengths[-1] = 1
    mask = (np.arange(t)[None, :] >= (t - lengths)[:, None]).astype(np.float32)
    return mask


def encoder_cases(d_item: int, n: int = 100, max_len: int = 1024, seed: int = 0,
                  max_batch: int = 8, max_t: int = 256) -> Iterator[dict[str, np.ndarray]]:
    """`n` random encoder inputs: batch 1..max_batch, history length 1..min(max_t, max_len) (plus the
    extremes 1 and max_len once each), varied left padding, padded slots filled with noise (the mask must
    hide them)."""
    rng = np.random.default_rng(seed)
    top = max(1, min(max_t, max_len))
    for i in range(n):
        b = int(rng.integers(1, max_batch + 1))
        t = 1 if i == 0 else (min(max_len, 1024) if i == 1 else int(rng.integers(1, top + 1)))
        if i == 1:
            b = 1
        mask = _left_padded_mask(rng, b, t)
        emb = rng.standard_normal((b, t, d_item)).astype(np.float32)
        yield {"history_emb": emb, "history_mask": mask}


def llm_cases(n_coarse: int, d_llm: int, d_item: int, n: int = 100, seed: int = 1, max_batch: int = 8,
              max_n: int = 50) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        b = int(rng.integers(1, max_batch + 1))
        t = 1 if i == 0 else int(rng.integers(1, max_n + 1))
        yield {
            "coarse": rng.standard_normal((b, n_coarse, d_llm)).astype(np.float32),
            "recent_emb": rng.standard_normal((b, t, d_item)).astype(np.float32),
            "recent_mask": _left_padded_mask(rng, b, t),
        }


def head_cases(n_coarse: int, d_llm: int, n: int = 100, seed: int = 2) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        b = int(rng.integers(1, 9))
        yield {"coarse": rng.standard_normal((b, n_coarse, d_llm)).astype(np.float32)}


# ---------------------------------------------------------------------------------------------- core
def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def export_module(module, example: dict[str, np.ndarray], path: str | os.PathLike, input_names: Sequence[str],
                  output_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]],
                  axis_bounds: dict[str, tuple[int, int]]) -> Path:
    """Export `module` (eval mode) with the dynamo exporter; weights to `<path>.data`. Returns the path.

    dynamic_axes: input name → {axis: symbolic name}; axis_bounds: symbolic name → (min, max).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)
    dims = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in axis_bounds.items()}
    # positional (tuple) form: the module's own argument names need not match the ONNX input names
    dynamic_shapes = tuple({ax: dims[sym] for ax, sym in dynamic_axes.get(inp, {}).items()} for inp in input_names)
    args = tuple(torch.from_numpy(example[name]) for name in input_names)
    module = module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, str(path), dynamo=True, input_names=list(input_names),
                output_names=list(output_names), dynamic_shapes=dynamic_shapes, external_data=True,
                optimize=True, verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        _remove(path)
        raise ExportError(f"torch.onnx.export (dynamo) failed for {type(module).__name__}: {exc}") from exc
    del program
    _normalise_external_data(path)
    return path


def _normalise_external_data(path: Path) -> None:
    """Make sure the weights live in exactly `<name>.onnx.data` next to the graph (the exporter may inline a
    tiny model, or name the file differently), and that the graph passes the checker."""
    import onnx

    data_name = path.name + ".data"
    graph = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value for init in graph.graph.initializer for entry in init.external_data if entry.key == "location"
    }
    if locations != {data_name}:
        # Small constants stay inline (shape inference needs them); everything >= 1 KiB goes to the side file.
        model = onnx.load(str(path), load_external_data=True)
        tmp = path.with_name(path.name + ".tmp")
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        os.replace(tmp, path)
        if not locations:  # the exporter had inlined everything
            pass
        for stale in locations - {data_name}:
            try:
                (path.parent / stale).unlink()
            except FileNotFoundError:
                pass
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: onnx checker failed: {exc}") from exc
    if not path.with_name(data_name).exists():
        raise ExportError(f"{path}: external-data file {data_name} is missing after export")


def ort_session(path: str | os.PathLike, threads: int = 1, providers: Sequence[str] | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"]))


def check_parity(module, onnx_path: str | os.PathLike, cases: Iterator[dict[str, np.ndarray]],
                 input_names: Sequence[str], name: str, atol: float = 1e-4, length_axis: dict[str, int] | None = None
                 ) -> ParityReport:
    """Run every case through PyTorch eager and ONNX Runtime; return the worst max |diff|."""
    import torch

    started = time.perf_counter()
    session = ort_session(onnx_path, threads=max(1, (os.cpu_count() or 1)))
    worst, worst_shapes, n = 0.0, {}, 0
    seen: dict[str, list[int]] = {}
    module = module.eval()
    for case in cases:
        with torch.no_grad():
            ref = module(*(torch.from_numpy(case[k]) for k in input_names)).float().numpy()
        got = session.run(None, {k: case[k] for k in input_names})[0]
        if got.shape != ref.shape:
            raise ParityError(f"{name}: ONNX output shape {got.shape} != PyTorch {ref.shape} for inputs "
                              f"{ {k: list(v.shape) for k, v in case.items()} }")
        diff = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf")
        if diff >= worst:
            worst, worst_shapes = diff, {k: list(v.shape) for k, v in case.items()}
        for inp, ax in (length_axis or {}).items():
            size = int(case[inp].shape[ax])
            lo_hi = seen.setdefault(inp, [size, size])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], size), max(lo_hi[1], size)
        n += 1
    report = ParityReport(name, n, atol, worst, worst_shapes, seen, time.perf_counter() - started)
    if n < 1:
        raise ParityError(f"{name}: parity check ran no cases")
    if not report.ok:
        raise ParityError(f"{name}: ONNX Runtime differs from PyTorch by {worst:.3e} > {atol:.1e} "
                          f"(worst case shapes {worst_shapes}, {n} cases)")
    return report


def _export_checked(module, example, path, input_names, output_names, dynamic_axes, axis_bounds, cases,
                    name, atol, length_axis) -> ParityReport:
    path = export_module(module, example, path, input_names, output_names, dynamic_axes, axis_bounds)
    try:
        report = check_parity(module, path, cases, input_names, name, atol, length_axis)
    except Exception:
        _remove(path)
        raise
    log.info("exported %s → %s (parity max |diff| %.2e over %d cases)", name, path, report.max_abs_diff,
             report.n_cases)
    return report


# ---------------------------------------------------------------------------------------------- models
def _module_device_cpu(module):
    return module.to("cpu").eval()


def export_encoder(encoder, path: str | os.PathLike, n_cases: int = 100, atol: float = 1e-4,
                   d_item: int | None = None, max_len: int | None = None, seed: int = 0) -> ParityReport:
    """LightweightEncoder → ONNX (dynamic B and T) + parity on `n_cases` random histories."""
    encoder = _module_device_cpu(encoder)
    cfg = encoder.config
    d_item = int(d_item or encoder.item_dim)
    max_len = int(max_len or getattr(cfg, "max_len", 1024))
    rng = np.random.default_rng(seed + 99)
    example_t = min(max_len, 9) if max_len > 2 else max_len
    example = {"history_emb": rng.standard_normal((3, example_t, d_item)).astype(np.float32),
               "history_mask": _left_padded_mask(rng, 3, example_t)}
    axes = {"history_emb": {0: "batch", 1: "history_len"}, "history_mask": {0: "batch", 1: "history_len"}}
    bounds = {"batch": (1, MAX_BATCH), "history_len": (1, max_len)}
    return _export_checked(encoder, example, path, ENCODER_INPUTS, ENCODER_OUTPUTS, axes, bounds,
                           encoder_cases(d_item, n_cases, max_len, seed), "encoder", atol,
                           {"history_emb": 1})


def export_llm(llm, path: str | os.PathLike, n_coarse: int, d_llm: int | None = None, n_cases: int = 100,
               atol: float = 1e-4, max_recent: int = 64, seed: int = 1) -> ParityReport:
    """LLMRecommender → ONNX (dynamic B and N; K_c fixed) + parity on `n_cases` random inputs."""
    llm = _module_device_cpu(llm)
    d_llm = int(d_llm or llm.hidden)
    d_item = int(llm.item_dim)
    if n_coarse < 1:
        raise ExportError("the LLM export needs K_c >= 1 coarse interests (the no-lightweight ablation is not served)")
    max_recent = max(2, min(max_recent, int(llm.max_positions) - n_coarse - int(llm.n_interests)))
    rng = np.random.default_rng(seed + 99)
    example = {"coarse": rng.standard_normal((3, n_coarse, d_llm)).astype(np.float32),
               "recent_emb": rng.standard_normal((3, 7, d_item)).astype(np.float32),
               "recent_mask": _left_padded_mask(rng, 3, 7)}
    axes = {"coarse": {0: "batch"}, "recent_emb": {0: "batch", 1: "recent_len"},
            "recent_mask": {0: "batch", 1: "recent_len"}}
    bounds = {"batch": (1, MAX_BATCH), "recent_len": (1, max_recent)}
    return _export_checked(llm, example, path, LLM_INPUTS, LLM_OUTPUTS, axes, bounds,
                           llm_cases(n_coarse, d_llm, d_item, n_cases, seed, max_n=min(50, max_recent)),
                           "llm", atol, {"recent_emb": 1})


def export_coarse_head(head, path: str | os.PathLike, n_coarse: int, d_llm: int, n_cases: int = 100,
                       atol: float = 1e-4, seed: int = 2) -> ParityReport:
    """The LLM projection head applied to coarse interests → [B, K_c, d_out] (serving's Triton-down queries)."""
    head = _module_device_cpu(head)
    example = {"coarse": np.random.default_rng(seed).standard_normal((3, n_coarse, d_llm)).astype(np.float32)}
    return _export_checked(head, example, path, HEAD_INPUTS, HEAD_OUTPUTS, {"coarse": {0: "batch"}},
                           {"batch": (1, MAX_BATCH)}, head_cases(n_coarse, d_llm, n_cases, seed),
                           "coarse_head", atol, None)


def _load_hybrid(layout):
    """The trained HybridRecommender of a run directory (training.train.load_hybrid) on the CPU."""
    from training.train import load_hybrid

    return load_hybrid(str(layout.root), device="cpu").eval()


def export_hybrid(model, export_dir: str | os.PathLike, *, recent_n: int, long_len: int, n_cases: int = 100,
                  atol: float = 1e-4, long_window: str | None = None) -> dict:
    """Export encoder.onnx, llm.onnx and coarse_head.onnx of a HybridRecommender into `export_dir` and write
    `manifest.json` (names, shapes, dims, parity, sha256). Returns the manifest.

    dims carries what serving's Decode needs to build the inputs the model was trained on: recent_n, long_len
    and long_window (core/history_window.py: whether the long window repeats the recent items; None = the
    model's own ``config.long_window``, the rule it was trained with)."""
    from core.artifacts import sha256_file, write_json_atomic
    from core.history_window import check_long_window

    export_dir = Path(export_dir)
    if model.lightweight is None:
        raise ExportError("model has no lightweight encoder (use_lightweight=False): nothing to serve coarse "
                          "interests from")
    if not model.config.use_llm:
        raise ExportError("model was trained without the LLM recommender (use_llm=False, an ablation): "
                          "there is no llm.onnx to serve")
    lw, llm = model.lightweight, model.llm
    k_c, d_llm, d_item = int(lw.config.n_coarse), int(llm.hidden), int(llm.item_dim)
    k, d_out = int(llm.n_interests), int(llm.out_dim)
    reports = [
        export_encoder(lw, export_dir / ENCODER_ONNX, n_cases, atol),
        export_llm(llm, export_dir / LLM_ONNX, k_c, d_llm, n_cases, atol, max_recent=max(64, recent_n)),
        export_coarse_head(llm.head, export_dir / COARSE_HEAD_ONNX, k_c, d_llm, n_cases, atol),
    ]
    files = {}
    for name in (ENCODER_ONNX, LLM_ONNX, COARSE_HEAD_ONNX):
        for f in (name, name + ".data"):
            files[f] = sha256_file(export_dir / f)
    manifest = {
        "format": 1,
        "dims": {"d_item": d_item, "d_llm": d_llm, "d_out": d_out, "n_coarse": k_c, "n_interests": k,
                 "recent_n": int(recent_n), "long_len": int(long_len), "max_long_len": int(lw.config.max_len),
                 "long_window": check_long_window(long_window or getattr(model.config, "long_window", "all"))},
        "models": {
            "encoder": {"file": ENCODER_ONNX, "inputs": list(ENCODER_INPUTS), "outputs": list(ENCODER_OUTPUTS)},
            "llm": {"file": LLM_ONNX, "inputs": list(LLM_INPUTS), "outputs": list(LLM_OUTPUTS)},
            "coarse_head": {"file": COARSE_HEAD_ONNX, "inputs": list(HEAD_INPUTS), "outputs": list(HEAD_OUTPUTS)},
        },
        "parity": {r.name: asdict(r) for r in reports},
        "sha256": files,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(export_dir / EXPORT_MANIFEST, manifest)
    return manifest


def export_run(run_dir: str | os.PathLike, n_cases: int = 100, atol: float = 1e-4) -> dict:
    """`hymirec export onnx`: export the trained model of a run directory (RunLayout) into run/export/."""
    from core.artifacts import RunLayout

    layout = RunLayout.at(run_dir)
    for required in (layout.model,):
        if not Path(required).exists():
            raise ExportError(f"run directory {layout.root} has no {Path(required).name}: train first")
    model = _load_hybrid(layout)
    return export_hybrid(model, layout.export_dir, recent_n=model.config.recent_n,
                         long_len=model.config.long_len, n_cases=n_cases, atol=atol,
                         long_window=model.config.long_window)


def read_manifest(export_dir: str | os.PathLike) -> dict:
    return json.loads((Path(export_dir) / EXPORT_MANIFEST).read_text())
