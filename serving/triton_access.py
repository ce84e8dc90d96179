"""Who may change what Triton serves: the control key of its model-repository API.

With HYMIREC_TRITON_CONTROL_KEY set (in the chart: a Secret only the pipeline and Triton get), tritonserver starts
with that API (repository index, load, unload — a load with file overrides amounts to code execution under the
Python backend) restricted to requests carrying the key; inference, health and metadata stay open, so serving
holds no key. Checked against tritonserver 2.51 (the nvidia-pytriton 0.7.0 wheel): HTTP wants the header by its
bare name, gRPC wants it prefixed with ``triton-grpc-protocol-``, and both answer a missing or wrong key with
"This API/protocol is restricted, expecting header ..." (HTTP 403, gRPC UNAVAILABLE).
"""
from __future__ import annotations

import os
from typing import Mapping

CONTROL_HEADER = "hymirec-control-key"  # lower case: gRPC metadata keys must be
GRPC_CONTROL_HEADER = "triton-grpc-protocol-" + CONTROL_HEADER
CONTROL_KEY_ENV = "HYMIREC_TRITON_CONTROL_KEY"
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/")


class TritonError(RuntimeError):
    """Triton could not be started or controlled (the message says which step and why)."""


def control_key_from_env(env: Mapping[str, str] | None = None) -> str | None:
    key = (os.environ if env is None else env).get(CONTROL_KEY_ENV, "").strip()
    if key and not set(key) <= _KEY_CHARS:
        # Triton splits its restricted-API flag on ',', ':' and '=': such a key would not be the one it checks.
        raise TritonError(f"{CONTROL_KEY_ENV} may hold letters, digits and -_.~+/ only")
    return key or None


def restricted_flags(key: str | None) -> list[str]:
    """tritonserver flags restricting the model-repository API to `key` (none without a key). Triton takes the key
    only on its command line; the chart passes it from the Secret through the container's env ($(VAR))."""
    if not key:
        return []
    return [f"--http-restricted-api=model-repository:{CONTROL_HEADER}={key}",
            f"--grpc-restricted-protocol=model-repository:{CONTROL_HEADER}={key}"]


def grpc_headers(key: str | None) -> dict | None:
    return {GRPC_CONTROL_HEADER: key} if key else None


def refused(what: str, where: str, sent_key: bool, exc: Exception) -> TritonError:
    """The error for a failed control call; a refusal says the key is missing or wrong, never what it is."""
    if "restricted" in str(exc).lower():
        sent = "a key that does not match" if sent_key else f"no key ({CONTROL_KEY_ENV} is not set)"
        return TritonError(f"{what} refused by Triton at {where}: its model-repository API is restricted and "
                           f"this client sent {sent}")
    return TritonError(f"{what} failed: {exc}")
