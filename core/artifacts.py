"""One artifact layout, shared by training (writer), serving (reader) and dags (mover).

A *run directory* holds everything one training run produced. Nothing else in the
project builds these paths by hand: import :class:`RunLayout` instead.

    runs/<run_id>/
      config.json              the full typed config the run used
      dataset.json             dataset name, counts, whether item text was used
      item_ids.json            raw item id per item index (index 0 = padding)
      item_titles.json         item text per index ("" when the dataset has none)
      item_embeddings.npy      [n_items+1, d_item] float32, frozen stage-1 embeddings (row 0 = zeros)
      recent_item_embeddings.npy [n_items+1, d_item] what the LLM recommender is fed for recent items
                               (= item_embeddings, + a learned id part when hybrid.recent_id_embedding)
      item_vectors.npy         [n_items+1, d_out] float32, L2-normalised retrieval vectors (the ANN index)
      item_popularity.npy      [n_items+1] int64 training counts (fallback recommender)
      codebook.npz             residual codebook (versioned, checksummed)
      item_codes.npy           [n_items+1, L] uint16 codes of every item
      item_scales.npy          [n_items+1, L] float16 per-layer scales (optional decode variant)
      model.pt                 hybrid recommender state_dict (lightweight + LLM + heads)
      sasrec.pt                SASRec baseline state_dict (when trained)
      metrics.json             validation/test metrics, codebook report, timings
      test_users.npy           [U_test] int64 user indices of the test set, in leave-one-out order (= the
                               peer split's test.tsv order)
      topk_test_popularity.npy [U_test, 100] int64 test top-100 lists (history masked, best first, 0-padded):
      topk_test_sasrec.npy       popularity, SASRec baseline (when trained), HyMiRec; scored by the quality
      topk_test_hymirec.npy      bench exactly like a peer library's lists
      export/encoder.onnx      lightweight encoder (ONNX, + encoder.onnx.data)
      export/llm.onnx          LLM recommender (ONNX, + llm.onnx.data)
      export/coarse_head.onnx  the projection head alone (serving's degraded mode: coarse interests → queries)
      export/manifest.json     dims, files and sha256 of the exported models
      export/triton/           generated Triton model repository
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON through a temp file + rename so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


# File names inside export/ (the exporter writes them, serving reads them).
ENCODER_ONNX = "encoder.onnx"
LLM_ONNX = "llm.onnx"
COARSE_HEAD_ONNX = "coarse_head.onnx"
EXPORT_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "RunLayout":
        return cls(Path(root))

    def _p(self, name: str) -> Path:
        return self.root / name

    config = property(lambda self: self._p("config.json"))
    dataset = property(lambda self: self._p("dataset.json"))
    item_ids = property(lambda self: self._p("item_ids.json"))
    item_titles = property(lambda self: self._p("item_titles.json"))
    item_embeddings = property(lambda self: self._p("item_embeddings.npy"))
    recent_item_embeddings = property(lambda self: self._p("recent_item_embeddings.npy"))
    item_vectors = property(lambda self: self._p("item_vectors.npy"))
    item_popularity = property(lambda self: self._p("item_popularity.npy"))
    codebook = property(lambda self: self._p("codebook.npz"))
    item_codes = property(lambda self: self._p("item_codes.npy"))
    item_scales = property(lambda self: self._p("item_scales.npy"))
    model = property(lambda self: self._p("model.pt"))
    sasrec = property(lambda self: self._p("sasrec.pt"))
    metrics = property(lambda self: self._p("metrics.json"))
    test_users = property(lambda self: self._p("test_users.npy"))
    topk_test_popularity = property(lambda self: self._p("topk_test_popularity.npy"))
    topk_test_sasrec = property(lambda self: self._p("topk_test_sasrec.npy"))
    topk_test_hymirec = property(lambda self: self._p("topk_test_hymirec.npy"))
    export_dir = property(lambda self: self._p("export"))
    encoder_onnx = property(lambda self: self.export_dir / ENCODER_ONNX)
    llm_onnx = property(lambda self: self.export_dir / LLM_ONNX)
    coarse_head_onnx = property(lambda self: self.export_dir / COARSE_HEAD_ONNX)
    export_manifest = property(lambda self: self.export_dir / EXPORT_MANIFEST)
    triton_repo = property(lambda self: self._p("export/triton"))

    # What a finished run is made of: the files a retrain hashes, records and promotes (metrics.json holds
    # timings, so it is recorded but not hashed).
    HASHED = ("config", "dataset", "item_ids", "item_titles", "item_embeddings", "item_vectors",
              "recent_item_embeddings", "item_popularity", "codebook", "item_codes", "item_scales", "model")

    def hashed_files(self) -> list[str]:
        """Names (relative to the run directory) of :attr:`HASHED`."""
        return [getattr(self, name).name for name in self.HASHED]

    def ensure(self) -> "RunLayout":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def read_json(self, path: Path) -> Any:
        return json.loads(Path(path).read_text())
