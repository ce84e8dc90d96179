"""Serving decodes each stored history with the codebook that encoded it (issue 27, deliverable 4): its own
release's, an older release's named by the registry, and never a wrong one (an unknown codebook drops the long
history and flags the answer `codebook_unknown`)."""
from __future__ import annotations

import numpy as np


def _decode(artifacts, codes, codebook_id):
    from serving.stages import Decode

    ctx = {"codes": codes, "recent_items": (), "codebook_id": codebook_id}
    Decode(artifacts)(ctx)
    return ctx


def test_each_history_is_decoded_with_its_own_codebook(serving_run, tmp_path):
    from core.artifacts import sha256_file
    from features.codebook import CodebookConfig, ResidualCodebook
    from serving.run_artifacts import Artifacts

    layout = serving_run["layout"]
    own = ResidualCodebook.load(layout.codebook)
    emb = np.load(layout.item_embeddings)[1:]
    older = ResidualCodebook.fit(emb, CodebookConfig(n_layers=own.config.n_layers,
                                                     codebook_size=own.config.codebook_size, kmeans_iters=5, seed=7))
    older_path = older.save(tmp_path / "codebook.npz")
    older_id = sha256_file(older_path)
    artifacts = Artifacts(layout.root)
    artifacts.codebook_paths = {older_id: older_path}
    artifacts.load()
    assert artifacts.codebook_id == sha256_file(layout.codebook) != older_id

    items = emb[:12]
    long_len = int(artifacts.dims["long_len"])
    for codebook, codebook_id in ((own, artifacts.codebook_id), (own, ""), (older, older_id)):
        ctx = _decode(artifacts, codebook.encode(items), codebook_id)
        expected = codebook.decode(codebook.encode(items)[-long_len:]).astype(np.float32)
        np.testing.assert_allclose(ctx["history_emb"][0], expected, rtol=1e-6, atol=1e-6)
        assert ctx["history_codebook"] == (codebook_id or artifacts.codebook_id)

    # the same codes read with the other codebook would be a different history: what versioned codes prevent
    wrong = own.decode(older.encode(items)[-long_len:])
    assert not np.allclose(wrong, _decode(artifacts, older.encode(items), older_id)["history_emb"][0], atol=1e-3)

    unknown = _decode(artifacts, older.encode(items), "f" * 64)
    assert unknown["history_codebook"] == "" and float(unknown["history_mask"].sum()) == 0.0


def test_unknown_codebook_is_flagged_in_the_answer(serving_run):
    from serving.config import ServingConfig
    from serving.history import StaticHistorySource
    from serving.request_path import RecommendPipeline

    layout = serving_run["layout"]
    codes = np.load(layout.item_codes)[1:9]

    class Tagged(StaticHistorySource):
        def get(self, user_id):
            from serving.history import UserHistory

            hist = super().get(user_id)
            return None if hist is None else UserHistory(hist.user_id, hist.codes, hist.recent_items, "f" * 64)

    pipeline = RecommendPipeline(ServingConfig(artifact_dir=layout.root, triton_url=None,
                                               milvus_uri="http://127.0.0.1:1", milvus_timeout_s=0.2),
                                 history_source=Tagged({"u": (codes, ())}))
    pipeline.start()
    try:
        answer = pipeline.recommend("u", k=5)
    finally:
        pipeline.close()
    assert "codebook_unknown" in answer["degraded_reasons"] and answer["history_codebook"] == ""
    assert len(answer["items"]) == 5  # still answered (popular: no Triton or Milvus here)
