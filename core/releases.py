"""What a release is, and how a reader finds the current one (stdlib only: serving and the stream processor read it).

A *release* is everything one promoted retrain produced, used together or not at all:

    codebook version (codebook_id = sha256 of codebook.npz) + item codes + ONNX encoder   (the run directory)
    + Triton LLM version (model "llm", version N)  + Milvus collection (<alias>_v<M>)

The pipeline writes all of it first, the quality gate checks it, and only then ``registry.json``'s ``production``
pointer is flipped to its version (orchestration/releases.py: one atomic rename under a file lock). Readers poll
that one file (:class:`ReleaseWatcher`): serving builds the new release's stages off the request path and swaps
them in with one assignment; every request uses one release from start to end (its run directory, its pinned
Triton version, its collection by name), so no answer mixes two releases.

    <artifact_root>/registry.json   {"format": 1, "production": N, "history": [..., previous], "models": [entry...]}

Each entry (written by orchestration.retrain.promote) names its run directory, codebook id, Triton version and
Milvus collection; :func:`release_of` reads one into a :class:`Release`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"


class ReleaseError(RuntimeError):
    """The registry names no usable release (missing, unreadable, or an entry without its parts)."""


@dataclass(frozen=True)
class Release:
    version: int
    run_dir: Path
    codebook_id: str  # sha256 of the run's codebook.npz ("" for a run without a codebook)
    triton_model: str
    triton_version: int
    milvus_uri: str
    milvus_alias: str
    milvus_collection: str
    interval_key: str = ""

    def describe(self) -> dict:
        return {"version": self.version, "run_dir": str(self.run_dir), "codebook_id": self.codebook_id,
                "triton": f"{self.triton_model}/{self.triton_version}", "milvus_collection": self.milvus_collection,
                "interval_key": self.interval_key}


def read_registry(root: str | os.PathLike) -> dict:
    """registry.json of an artifact root; an empty registry when there is none yet."""
    path = Path(root) / REGISTRY_FILE
    if not path.exists():
        return {"format": 1, "production": None, "history": [], "models": []}
    try:
        reg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"{path}: unreadable registry: {exc}") from exc
    reg.setdefault("history", [])
    return reg


def release_of(entry: dict) -> Release:
    """A registry entry as a Release (raises ReleaseError naming what the entry lacks)."""
    try:
        run_hashes = entry.get("hashes", {}).get("run", {})
        return Release(version=int(entry["version"]), run_dir=Path(entry["run_dir"]),
                       codebook_id=str(entry.get("codebook_id") or run_hashes.get("codebook.npz", "")),
                       triton_model=str(entry["triton"]["model"]), triton_version=int(entry["triton"]["version"]),
                       milvus_uri=str(entry["milvus"]["uri"]), milvus_alias=str(entry["milvus"]["alias"]),
                       milvus_collection=str(entry["milvus"]["collection"]),
                       interval_key=str(entry.get("interval_key", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"registry entry {entry.get('version')!r} lacks {exc}") from exc


def entry_for(reg: dict, version: int) -> dict:
    found = [m for m in reg.get("models", []) if int(m["version"]) == int(version)]
    if not found:
        raise ReleaseError(f"no release {version} in the registry (known: {[m['version'] for m in reg['models']]})")
    return found[-1]


def current_release(root: str | os.PathLike) -> Release | None:
    """The release the registry's ``production`` pointer names (None before the first promote)."""
    reg = read_registry(root)
    if reg.get("production") is None:
        return None
    return release_of(entry_for(reg, reg["production"]))


def codebook_paths(root: str | os.PathLike) -> dict[str, Path]:
    """{codebook_id: codebook.npz} of every release in the registry (what a reader needs to decode codes
    written under an older release's codebook)."""
    out: dict[str, Path] = {}
    for entry in read_registry(root).get("models", []):
        try:
            rel = release_of(entry)
        except ReleaseError:
            continue
        path = rel.run_dir / "codebook.npz"
        if rel.codebook_id and path.exists():
            out[rel.codebook_id] = path
    return out


class ReleaseWatcher:
    """Polls registry.json (a stat per call, a read only when it changed): ``poll()`` returns the new current
    Release once after each flip, else None. ``forget()`` makes the next poll report the current one again
    (a reader whose switch failed retries at the next poll)."""

    def __init__(self, root: str | os.PathLike, every_s: float = 1.0):
        self.root = Path(root)
        self.every_s = float(every_s)
        self._stamp: tuple | None = None
        self._version: int | None = None
        self._checked = float("-inf")
        self.failures = 0  # releases that failed to load (load_next)

    def poll(self, force: bool = False) -> Release | None:
        now = time.monotonic()
        if not force and now - self._checked < self.every_s:
            return None
        self._checked = now
        try:
            st = (self.root / REGISTRY_FILE).stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None
        if stamp == self._stamp:
            return None
        release = current_release(self.root)
        self._stamp = stamp
        if release is None or release.version == self._version:
            return None
        self._version = release.version
        return release

    def load_next(self, load):
        """poll(), and ``load(release)`` the new current release: returns (release, what load returned), or None
        when nothing changed or the load failed (logged; the reader stays on its release and the next poll tries
        again)."""
        try:
            release = self.poll()
            return None if release is None else (release, load(release))
        except Exception as exc:  # noqa: BLE001 - a reader keeps its release rather than stopping
            self.failures += 1
            self.forget()
            log.warning("could not switch to the new current release of %s (staying on the one in use): %s",
                        self.root, exc)
            return None

    def forget(self) -> None:
        self._stamp = None
        self._version = None

    def prime(self, version: int) -> None:
        """The reader already uses release ``version``: polls report only a flip to another one."""
        self._stamp = None
        self._version = int(version)
