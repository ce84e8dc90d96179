"""Helpers of the guard and fuzz tests: API keys laid out as a mounted Secret, the app with auth required."""
from __future__ import annotations

from pathlib import Path

# API keys as a mounted Kubernetes Secret holds them: a directory with one file per Secret key.
API_KEYS = ("first-key-0123456789abcdef", "second-key-0123456789abcdef")
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def write_keys_dir(path: Path, keys=API_KEYS, metrics_token=METRICS_TOKEN) -> Path:
    import os

    path.mkdir(parents=True, exist_ok=True)
    for name, text in (("api-keys", "# rotated keys, one a line\n" + "\n".join(keys) + "\n"),
                       ("metrics-token", metrics_token + "\n")):
        tmp = path / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path / name)  # atomic, as the kubelet swaps a Secret's files
    return path


def start_guarded_app(serving_run, milvus, feast_store, keys_dir, **guard):
    """The real app with authentication required (Triton off: the guard does not depend on the LLM stage)."""
    from devservices.app import AppServer
    from serving.app import create_app
    from serving.config import ServingConfig

    config = ServingConfig(artifact_dir=serving_run["layout"].root, triton_url=None, milvus_uri=milvus.uri,
                           feast_repo=feast_store[1], host="0.0.0.0", auth="required", api_keys_file=str(keys_dir),
                           **guard)
    return AppServer(create_app(config)).start()
