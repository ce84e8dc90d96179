"""What serving reads from a run directory (core.artifacts.RunLayout), loaded once by the pipeline's start()."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts import RunLayout, sha256_file
from core.history_window import check_long_window

log = logging.getLogger(__name__)
# Items added between retrains by the codebook-refresh DAG (orchestration.refresh.index_new_items):
# {"base": len(item_ids.json), "ids": [raw ids]}; the j-th id has item index base + j in the Milvus collection.
EXTRA_ITEMS = "extra_items.json"


@dataclass
class Artifacts:
    """Everything serving reads from a run directory (loaded in start(), never in __init__)."""

    root: Path
    item_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    index_of: dict[str, int] = field(default_factory=dict)
    item_embeddings: np.ndarray | None = None  # [n_items+1, d_item]
    recent_embeddings: np.ndarray | None = None  # [n_items+1, d_item] recent-item inputs of the LLM recommender
    item_codes: np.ndarray | None = None  # [n_items+1, L]
    popularity_order: np.ndarray | None = None  # item indices, most popular first (no padding)
    popularity: np.ndarray | None = None
    codebook: Any = None
    codebook_id: str = ""  # sha256 of the run's codebook.npz: the id the release's codes are stored under
    # {codebook_id: codebook.npz} of older releases (core.releases.codebook_paths), so a history stored under
    # an older codebook is decoded with that codebook, never with this run's
    codebook_paths: dict = field(default_factory=dict)
    _codebooks: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    extra_ids: list[str] = field(default_factory=list)  # new items since the run (EXTRA_ITEMS), index base + j
    extra_index_of: dict[str, int] = field(default_factory=dict)
    _extra_stamp: int | None = None
    _extra_checked: float = float("-inf")

    @property
    def layout(self) -> RunLayout:
        return RunLayout.at(self.root)

    def load(self) -> "Artifacts":
        from features.codebook import ResidualCodebook

        lay = self.layout
        self.item_ids = json.loads(Path(lay.item_ids).read_text())
        self.titles = json.loads(Path(lay.item_titles).read_text()) if Path(lay.item_titles).exists() else []
        if len(self.titles) != len(self.item_ids):
            self.titles = [""] * len(self.item_ids)
        self.index_of = {raw: i for i, raw in enumerate(self.item_ids) if i > 0}
        self.item_embeddings = np.load(lay.item_embeddings, mmap_mode="r")
        # Recent items are fed as the model saw them in training (older runs: the plain embeddings).
        recent = lay.recent_item_embeddings if Path(lay.recent_item_embeddings).exists() else lay.item_embeddings
        self.recent_embeddings = np.load(recent, mmap_mode="r")
        self.item_codes = np.load(lay.item_codes) if Path(lay.item_codes).exists() else None
        pop = np.load(lay.item_popularity).astype(np.float64)
        pop[0] = -np.inf
        self.popularity = pop
        self.popularity_order = np.lexsort((np.arange(len(pop)), -pop))  # count desc, index asc
        self.popularity_order = self.popularity_order[self.popularity_order > 0]
        self.codebook = ResidualCodebook.load(lay.codebook) if Path(lay.codebook).exists() else None
        self.codebook_id = sha256_file(lay.codebook) if self.codebook is not None else ""
        self._codebooks = {self.codebook_id: self.codebook} if self.codebook is not None else {}
        manifest = json.loads(lay.export_manifest.read_text())
        self.dims = manifest["dims"]
        check_long_window(self.dims.get("long_window", "all"))  # a bad manifest fails at start, not per request
        self.versions = {"encoder": manifest.get("sha256", {}).get("encoder.onnx", "")[:12]
                         or sha256_file(lay.encoder_onnx)[:12]}
        self.refresh_extra(every_s=0.0)
        return self

    def codebook_for(self, codebook_id: str):
        """(codebook, id) to decode codes stored under ``codebook_id``: this run's for its own id and for rows
        that recorded none (written before codes carried their codebook); an older release's when the registry
        names it; (None, id) when no codebook with that id is known (the caller degrades, never decodes with
        the wrong one)."""
        if not codebook_id or codebook_id == self.codebook_id:
            return self.codebook, self.codebook_id
        found = self._codebooks.get(codebook_id)
        if found is None and codebook_id in self.codebook_paths:
            from features.codebook import ResidualCodebook

            try:
                found = ResidualCodebook.load(self.codebook_paths[codebook_id])
            except (OSError, ValueError) as exc:
                log.warning("codebook %s unreadable at %s: %s", codebook_id[:12], self.codebook_paths[codebook_id], exc)
            if found is not None:
                self._codebooks = {**self._codebooks, codebook_id: found}
        return found, codebook_id

    def refresh_extra(self, every_s: float = 2.0) -> None:
        """Re-read EXTRA_ITEMS when it changed (a stat at most every ``every_s``): new items become nameable
        without a restart. A file that does not match the run is ignored with a warning, never half-read."""
        now = time.monotonic()
        if now - self._extra_checked < every_s:
            return
        self._extra_checked = now
        path = self.root / EXTRA_ITEMS
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._extra_stamp:
            return
        try:
            data = json.loads(path.read_text()) if stamp is not None else {"base": len(self.item_ids), "ids": []}
            ids = [str(i) for i in data["ids"]]
            if int(data["base"]) != len(self.item_ids):
                raise ValueError(f"base {data['base']} != {len(self.item_ids)} item rows of the run")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return
        base = len(self.item_ids)
        self.extra_index_of = {raw: base + j for j, raw in enumerate(ids)}
        self.extra_ids = ids  # replaced, never mutated: a concurrent request sees the old or the new list
        self._extra_stamp = stamp

    def name(self, index: int) -> str | None:
        """Raw item id of an item index (the run's items, then the extra items); None when unknown."""
        if 0 < index < len(self.item_ids):
            return self.item_ids[index]
        extra = self.extra_ids
        j = index - len(self.item_ids)
        return extra[j] if 0 <= j < len(extra) else None

    def title(self, index: int) -> str:
        return self.titles[index] if 0 < index < len(self.titles) else ""


# ------------------------------------------------------------------------------------------------ stages
