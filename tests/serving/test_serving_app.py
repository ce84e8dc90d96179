"""HTTP against the running app: full pipeline answers, fallbacks for unknown users, 4xx for bad requests,
/live /ready /metrics. Merge properties themselves are tested in tests/features/test_retrieval.py."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.services


def test_recommend_full_pipeline(http, serving_run):
    d = serving_run["manifest"]["dims"]
    r = http.post("/recommend", json={"user_id": "user3", "k": 20, "exclude_seen": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "full" and body["degraded"] is False and body["degraded_reasons"] == []
    assert len(body["items"]) == 20 == len(set(body["items"]))
    assert len(body["scores"]) == len(body["interests"]) == len(body["titles"]) == 20
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert all(0 <= i < d["n_interests"] for i in body["interests"])
    assert all(t.startswith("Synthetic item") for t in body["titles"])
    assert body["model_version"]["llm"].startswith("llm/") and body["model_version"]["encoder"]
    assert body["index_version"] == "hymirec_items_v1"
    for stage in ("fetch", "decode", "encode", "refine", "search", "merge", "total"):
        assert body["latency_ms"][stage] >= 0
    hist = serving_run["users"]["user3"]
    seen = {serving_run["item_ids"][i] for i in hist[-50:]}
    assert not seen & set(body["items"])


def test_recommend_matches_offline_computation(http, serving_run):
    """Served items == brute-force max-over-interests ranking of the same interests over item_vectors."""
    from core.retrieval import merge_interest_candidates
    from serving.config import ServingConfig
    from serving.request_path import RecommendPipeline
    from serving.served_release import ServedRelease

    body = http.post("/recommend", json={"user_id": "user5", "k": 15, "exclude_seen": False}).json()
    assert body["mode"] == "full"
    # Recompute the interests in-process with ONNX Runtime only (encoder + llm.onnx), no services involved.
    import onnxruntime as ort

    layout = serving_run["layout"]
    pipe = RecommendPipeline(ServingConfig(artifact_dir=layout.root, triton_url=None),
                             history_source=_StaticFromRun(serving_run))
    release = ServedRelease.load(layout.root)
    ctx = {"user_id": "user5"}
    pipe.fetch(ctx)
    release.decode(ctx)
    enc = ort.InferenceSession(str(layout.encoder_onnx), providers=["CPUExecutionProvider"])
    llm = ort.InferenceSession(str(layout.llm_onnx), providers=["CPUExecutionProvider"])
    coarse = enc.run(None, {"history_emb": ctx["history_emb"], "history_mask": ctx["history_mask"]})[0]
    interests = llm.run(None, {"coarse": coarse, "recent_emb": ctx["recent_emb"], "recent_mask": ctx["recent_mask"]})[0][0]
    vectors = serving_run["vectors"]
    sims = interests @ vectors[1:].T  # [K, n_items]
    order = np.argsort(-sims, axis=1, kind="stable")[:, :50]
    ids = order + 1
    merged = merge_interest_candidates(ids, np.take_along_axis(sims, order, 1), 15)
    expected = [serving_run["item_ids"][i] for i in merged.item_ids]
    assert body["items"] == expected
    np.testing.assert_allclose(body["scores"], merged.scores, atol=1e-4)
    assert body["interests"] == merged.interest.tolist()


class _StaticFromRun:
    name = "static"

    def __init__(self, run):
        from devservices.serving_run import user_states

        self.rows = {s.user_id: s for s in user_states(run)}

    def start(self):
        pass

    def get(self, user_id):
        from serving.history import UserHistory

        s = self.rows.get(user_id)
        return None if s is None else UserHistory(user_id, s.codes, tuple(s.recent_items))

    def ping(self):
        return True

    def close(self):
        pass


def test_unknown_user_gets_popular_items(http, serving_run):
    body = http.post("/recommend", json={"user_id": "nobody-here", "k": 5}).json()
    assert body["mode"] == "popular" and body["degraded"] and "unknown_user" in body["degraded_reasons"]
    pop = np.load(serving_run["layout"].item_popularity)
    top = [serving_run["item_ids"][i] for i in np.lexsort((np.arange(len(pop)), -pop)) if i > 0][:5]
    assert body["items"] == top and body["interests"] == [-1] * 5


@pytest.mark.parametrize("payload, field", [
    ({"k": 5}, "user_id"),
    ({"user_id": "", "k": 5}, "user_id"),
    ({"user_id": "user1", "k": 0}, "k"),
    ({"user_id": "user1", "k": 100000}, "k"),
    ({"user_id": "user1", "k": "many"}, "k"),
    ({"user_id": "user1", "k": 5, "exclude_seen": "perhaps"}, "exclude_seen"),
    ({"user_id": "user1", "k": 5, "colour": "red"}, "colour"),
])
def test_invalid_requests_get_4xx_with_a_clear_message(http, payload, field):
    r = http.post("/recommend", json=payload)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]


def test_malformed_json_is_4xx(http):
    r = http.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500


def test_live_ready_metrics(http):
    assert http.get("/live").json() == {"status": "live"}
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"artifacts": True, "store": True, "triton": True, "milvus": True}
    http.post("/recommend", json={"user_id": "user1", "k": 3})
    text = http.get("/metrics").text
    assert 'hymirec_recommend_requests_total{mode="full"}' in text
    assert 'hymirec_stage_seconds_bucket{le="0.01",stage="refine"}' in text
    assert "hymirec_recommend_degraded_total" in text
    stages = {s["name"]: s for s in http.get("/stages").json()}
    assert stages["search"]["inputs"] == ["interests", "limit", "collection"]  # pinned to its release
