"""Export of the trained models for serving: ONNX files (with parity checks) and the Triton model repository.

    hymirec export onnx   → training.export.onnx_export.export_run(run_dir)
    hymirec export triton → training.export.triton_repo.build_run_repo(run_dir)
Imports are lazy: importing this package does not import torch.
"""
from __future__ import annotations

__all__ = ["export_onnx", "export_triton"]


def export_onnx(run_dir, n_cases: int = 100, atol: float = 1e-4) -> dict:
    from training.export.onnx_export import export_run

    return export_run(run_dir, n_cases=n_cases, atol=atol)


def export_triton(run_dir, **kwargs) -> dict:
    from training.export.triton_repo import build_run_repo

    return build_run_repo(run_dir, **kwargs)
