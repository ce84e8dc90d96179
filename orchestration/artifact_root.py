"""The versioned artifact directory of the Airflow pipeline (orchestration/retrain.py): layout, step records, registry.

    <artifact_root>/
      registry.json                 the small registry: production version + one entry per promoted model
      current -> intervals/<key>/run   the production run directory (RunLayout), swapped atomically by promote
      triton/{local,production}/    the shared Triton model repository (model "llm", one version per model)
      milvus.db                     default Milvus Lite URI (when no milvus_uri is configured)
      intervals/<interval_key>/     everything one data interval produced (named by the interval, never by time)
        snapshot/  stage1/  codebook/  run/  steps/<task>.json
      refresh/<interval_key>/       hymirec_codebook_refresh outputs (new item codes) + steps/

A step record (steps/<task>.json) holds the step's inputs fingerprint, its result (what went to XCom) and the
sha256 of every artifact it wrote. A re-run of a task for the same interval with the same inputs finds the
record, verifies the hashes and returns the same result (``params.recompute`` forces a recomputation; the
new hashes are compared with the recorded ones and the result says whether they were reproduced).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.artifacts import sha256_file, write_json_atomic

log = logging.getLogger("orchestration.retrain")

REGISTRY_FORMAT = 1


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def hash_files(root: Path, names: list[str]) -> dict[str, str]:
    """{relative name: sha256} of the files under ``root`` (missing files are an error)."""
    return {name: sha256_file(root / name) for name in sorted(names)}


def content_hash(hashes: dict[str, str]) -> str:
    return fingerprint(sorted(hashes.items()))


class ArtifactRoot:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    registry = property(lambda self: self.root / "registry.json")
    current = property(lambda self: self.root / "current")
    triton_repo = property(lambda self: self.root / "triton")
    default_milvus = property(lambda self: str(self.root / "milvus.db"))

    def interval(self, key: str) -> Path:
        return self.root / "intervals" / key

    def refresh(self, key: str) -> Path:
        return self.root / "refresh" / key

    # ------------------------------------------------------------------------------------------ registry
    @contextlib.contextmanager
    def locked_registry(self) -> Iterator[dict]:
        """Read-modify-write of registry.json under an exclusive file lock; written atomically on exit."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "registry.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                reg = self.read_registry()
                before = json.dumps(reg, sort_keys=True)
                yield reg
                if json.dumps(reg, sort_keys=True) != before:
                    write_json_atomic(self.registry, reg)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_registry(self) -> dict:
        if not self.registry.exists():
            return {"format": REGISTRY_FORMAT, "production": None, "models": []}
        return json.loads(self.registry.read_text())

    def production(self) -> dict | None:
        reg = self.read_registry()
        return next((m for m in reg["models"] if m["version"] == reg.get("production")), None)

    # ------------------------------------------------------------------------------------------ symlink
    def swap_current(self, run_dir: Path) -> str:
        """Point ``current`` at ``run_dir`` (relative link) with one rename: readers see old or new."""
        target = os.path.relpath(run_dir, self.root)
        if self.current.is_symlink() and os.readlink(self.current) == target:
            return target
        tmp = self.root / f".current.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, self.current)
        return target


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place (the previous one, if any, is removed afterwards)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_recorded(ctx: dict, final: Path, record_dir: Path, inputs: dict,
                 compute: Callable[[Path], tuple[dict, list[str]]]) -> dict:
    """Run one step idempotently: ``compute(tmp_dir)`` writes the step's artifacts into an empty ``tmp_dir`` and
    returns (result, artifact file names); the directory then replaces ``final`` in one rename.

    The record ``record_dir/<task>.json`` keeps the inputs fingerprint, the result and the artifact hashes. With
    the same inputs and intact artifacts the recorded result is returned without recomputing (retries and clears
    are cheap), unless ``params.recompute`` is true: then the step runs again, ``reproduced`` tells whether the
    artifacts came out byte-identical, and identical artifacts leave ``final`` untouched.
    """
    task = ctx["task_id"]
    record_path = record_dir / f"{task}.json"
    key = fingerprint(inputs)
    previous = json.loads(record_path.read_text()) if record_path.exists() else None
    same_inputs = bool(previous) and previous.get("inputs") == key
    intact = same_inputs and all((final / n).exists() and sha256_file(final / n) == h
                                 for n, h in previous["hashes"].items())
    if intact and not ctx["params"].get("recompute", False):
        return {**previous["result"], "reused": True}
    tmp = fresh_dir(final.with_name(f".{final.name}.tmp"))
    result, names = compute(tmp)
    hashes = hash_files(tmp, names)
    if intact and previous["hashes"] == hashes:
        shutil.rmtree(tmp)  # byte-identical: keep the artifacts already in place
    else:
        replace_dir(tmp, final)
    result = {**result, "dir": str(final), "hashes": hashes, "content_hash": content_hash(hashes),
              "interval_key": ctx["interval_key"]}
    if same_inputs:
        result["reproduced"] = previous["hashes"] == hashes
    write_json_atomic(record_path, {"task": task, "inputs": key, "result": result, "hashes": hashes,
                                    "run_id": ctx["run_id"], "try_number": ctx["try_number"]})
    return {**result, "reused": False}


def source_signature(source: str) -> list:
    """Cheap change detector of a dataset path (names, sizes, mtimes); a name (synthetic) is its own signature."""
    path = Path(source)
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file()) if path.exists() else []
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files] or [source]


def open_online_store(params):
    from features.store import StoreConfig, open_store

    if params.get("feast_repo"):
        return open_store(StoreConfig.from_file(params["feast_repo"]))
    if os.environ.get("HYMIREC_STORE_TYPE"):
        return open_store(StoreConfig.from_env())
    return None


def push_codes(params, item_ids, codes, codebook_id: str) -> dict:
    """Write item codes to the online store (idempotent: same ids → same values)."""
    from features.item_codes import write_item_codes

    store = open_online_store(params)
    if store is None:
        log.warning("no feast_repo / HYMIREC_STORE_TYPE configured: item codes not pushed to the online store")
        return {"pushed": 0, "note": "no online store configured"}
    with store:
        write_item_codes(store, list(item_ids), np.asarray(codes), codebook_id=codebook_id)
    return {"pushed": len(item_ids), "codebook_id": codebook_id}
