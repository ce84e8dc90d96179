"""The release a request is served from, and the thread that follows the registry to the next one.

A :class:`ServedRelease` bundles what changes with a release: the run directory's artifacts, the stages built on
them (decode, the ONNX encoder and coarse head, popular items), the pinned Triton version and the Milvus
collection. The pipeline reads ``pipeline.release`` once per request and uses that bundle from start to end, so
one answer never mixes two releases; :class:`ReleaseFollower` builds the next bundle off the request path (loading
artifacts and ONNX sessions takes ~100 ms to seconds) and swaps it in with one assignment. A release that fails to
load leaves serving on the current one and is tried again at the next poll.

Without a release root (``hymirec serve`` on a plain run directory, the demo), the one bundle comes from
``artifact_dir`` and requests go through the Milvus alias and the Triton server's own version choice.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from core.releases import Release, ReleaseWatcher, codebook_paths
from serving.run_artifacts import Artifacts
from serving.stages import CoarseQueries, Decode, Encode, Popular

log = logging.getLogger(__name__)


@dataclass
class ServedRelease:
    artifacts: Artifacts
    decode: Decode
    encode: Encode
    coarse: CoarseQueries
    popular: Popular
    release: Release | None = None  # None: a plain run directory (no registry)

    @property
    def version(self) -> int | None:
        return None if self.release is None else self.release.version

    @property
    def triton_version(self) -> str:
        """The LLM version requests of this release ask Triton for ("" = the server's choice)."""
        return "" if self.release is None else str(self.release.triton_version)

    @property
    def collection(self) -> str | None:
        """The Milvus collection requests of this release search (None = through the alias)."""
        return None if self.release is None else self.release.milvus_collection

    @classmethod
    def load(cls, run_dir: str | Path, ort_threads: int = 1, release: Release | None = None,
             release_root: Path | None = None) -> "ServedRelease":
        """Load a run directory's artifacts and open its ONNX sessions (I/O: call off the request path)."""
        artifacts = Artifacts(Path(run_dir))
        if release_root is not None:
            artifacts.codebook_paths = codebook_paths(release_root)
        artifacts.load()
        layout = artifacts.layout
        bundle = cls(artifacts=artifacts, decode=Decode(artifacts), encode=Encode(layout.encoder_onnx, ort_threads),
                     coarse=CoarseQueries(layout.coarse_head_onnx, int(artifacts.dims["d_out"]), ort_threads),
                     popular=Popular(artifacts), release=release)
        for stage in bundle.stages:
            stage.start()
        return bundle

    @property
    def stages(self):
        return [self.decode, self.encode, self.coarse, self.popular]

    def close(self) -> None:
        for stage in self.stages:
            try:
                stage.close()
            except Exception:  # noqa: BLE001
                pass


class ReleaseFollower:
    """Polls the registry every ``every_s`` and hands each new current release, loaded, to ``swap``."""

    def __init__(self, root: Path, every_s: float, load, swap):
        self.watcher = ReleaseWatcher(root, every_s)
        self.every_s = float(every_s)
        self._load, self._swap = load, swap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.switches = 0

    def prime(self, release: Release) -> None:
        """The release start() loaded: polls report only a flip to another one."""
        self.watcher.prime(release.version)

    def check(self) -> bool:
        """One poll; True when a new release was loaded and swapped in (a failed load leaves serving on the
        current release and is retried at the next poll)."""
        switched = self.watcher.load_next(self._load)
        if switched is None:
            return False
        release, bundle = switched
        self._swap(bundle)
        self.switches += 1
        log.info("now serving release %s (%s)", release.version, release.run_dir)
        return True

    @property
    def failures(self) -> int:
        return self.watcher.failures

    def start(self) -> "ReleaseFollower":
        self._thread = threading.Thread(target=self._run, name="release-follower", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
