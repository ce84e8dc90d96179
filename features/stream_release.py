"""The stream processor follows the current release (core/releases.py) without a restart.

When the registry's ``production`` pointer flips, the processor's next batch maps items with the new release's
item codes (its run directory's table) and writes every history under the new codebook id. A user's stored
history encoded under an older release's codebook is migrated when the user is next written (decode with the
codebook that encoded it, encode with the new one: features/codebook_migration.translate), so one history never
holds two codebooks' codes; the retrain DAG's migrate step converts the users who stay quiet.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.releases import Release, ReleaseWatcher, codebook_paths, current_release

from .item_codes import ItemCodeMapper, StreamConfigError, load_codebook
from .store.base import UserState

log = logging.getLogger("hymirec.stream")


class ReleaseTracker:
    """The processor's current release: its item-code mapper, its codebook id, and the older releases' codebooks
    (to migrate histories). No I/O in the constructor; :meth:`start` reads the registry."""

    def __init__(self, root: str | Path, every_s: float = 1.0, embeddings: Any = None):
        self.root = Path(root)
        self.watcher = ReleaseWatcher(self.root, every_s)
        self.embeddings = embeddings
        self.release: Release | None = None
        self.codebook: Any = None
        self._codebooks: dict[str, Any] = {}
        self.switches = 0
        self.migrated = 0

    @property
    def codebook_id(self) -> str:
        return self.release.codebook_id if self.release is not None else ""

    def start(self) -> ItemCodeMapper:
        release = current_release(self.root)
        if release is None:
            raise StreamConfigError(f"{self.root}: the registry names no current release yet: promote one first, "
                                    "or run without --release-root and give --item-codes")
        mapper = self._switch(release)
        self.watcher.prime(release.version)
        return mapper

    def poll(self) -> ItemCodeMapper | None:
        """A new mapper after a flip (None when the release did not change). A release that fails to load is
        logged and tried again at the next poll; the processor keeps the current one meanwhile."""
        switched = self.watcher.load_next(self._switch)
        return None if switched is None else switched[1]

    def _switch(self, release: Release) -> ItemCodeMapper:
        codebook_file = release.run_dir / "codebook.npz"
        codebook = load_codebook(codebook_file) if codebook_file.exists() else None
        mapper = ItemCodeMapper.from_path(release.run_dir, codebook, self.embeddings)
        if codebook is not None:
            self._codebooks[release.codebook_id] = codebook  # older releases' are loaded on first use
        previous, self.release, self.codebook = self.release, release, codebook
        if previous is not None:
            self.switches += 1
            log.info("release %s -> %s: item codes from %s, codebook %s", previous.version, release.version,
                     release.run_dir, release.codebook_id[:12])
        return mapper

    def _codebook(self, codebook_id: str):
        """The codebook of an older release (loaded once; None when no release in the registry has it)."""
        if codebook_id not in self._codebooks:
            path = codebook_paths(self.root).get(codebook_id)
            if path is None:
                return None
            self._codebooks[codebook_id] = load_codebook(path)
        return self._codebooks[codebook_id]

    def migrate(self, state: UserState) -> UserState:
        """``state`` with its codes re-encoded under the current codebook when they were stored under another
        release's (rows that recorded no codebook, or already current, come back unchanged). Raises
        StreamConfigError when the row's codebook is unknown to the registry: such a row is never re-encoded
        blindly (its events are retried until an operator fixes the registry or runs the migration)."""
        old = getattr(state, "codebook_id", "")
        if not old or old == self.codebook_id or self.codebook is None or len(state.codes) == 0:
            return state
        source = self._codebook(old)
        if source is None:
            raise StreamConfigError(f"user {state.user_id!r}: history stored under codebook {old[:12]}, which no "
                                    f"release in {self.root} has; cannot migrate it to {self.codebook_id[:12]}")
        from .codebook_migration import translate

        codes = np.asarray(translate(state.codes, source, self.codebook), dtype=np.uint16)
        self.migrated += 1
        return state.with_codes(codes, self.codebook_id)
