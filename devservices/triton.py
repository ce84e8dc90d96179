"""The real `tritonserver` (nvidia-pytriton wheel, `.venv-triton`) as a test service.

    from devservices.triton import triton_server  # noqa: F401  (registers the fixture)

`triton_server` is session-scoped: it needs a fixture `triton_repo` (path of a generated *local* model
repository; see training/export/triton_repo.py) and `triton_models` (names to load at start, default ["llm"]),
starts the server once on free loopback ports in explicit model-control mode, and stops it at the end.
`start_triton()` is the same thing for tests that need a private server they can kill.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.triton_server import TritonError, TritonInstall, TritonServer


def triton_available() -> str | None:
    """None when the Triton venv is set up, else the reason (for a clear skip/fail message)."""
    try:
        TritonInstall.discover()
        return None
    except TritonError as exc:
        return str(exc)


def start_triton(repo: str | os.PathLike, models=("llm",), log_dir: str | os.PathLike | None = None,
                 name: str = "triton") -> TritonServer:
    log_path = Path(log_dir) / f"{name}.log" if log_dir else None
    server = TritonServer(repo, list(models), log_path=log_path)
    server.start()
    return server


@pytest.fixture(scope="session")
def triton_models():
    return ["llm"]


@pytest.fixture(scope="session")
def triton_server(triton_repo, triton_models, tmp_path_factory):
    reason = triton_available()
    if reason:
        pytest.fail(f"tritonserver is not set up: {reason}")
    server = start_triton(triton_repo, triton_models, tmp_path_factory.mktemp("triton-logs"))
    try:
        yield server
    finally:
        server.stop()
