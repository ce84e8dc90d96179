"""What serving reads from a run directory (core.artifacts.RunLayout), loaded once by the pipeline's start()."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts import RunLayout, sha256_file
from core.history_window import check_long_window


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
    dims: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

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
        manifest = json.loads(lay.export_manifest.read_text())
        self.dims = manifest["dims"]
        check_long_window(self.dims.get("long_window", "all"))  # a bad manifest fails at start, not per request
        self.versions = {"encoder": manifest.get("sha256", {}).get("encoder.onnx", "")[:12]
                         or sha256_file(lay.encoder_onnx)[:12]}
        return self


# ------------------------------------------------------------------------------------------------ stages
