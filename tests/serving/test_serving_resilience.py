"""Dependencies fail while the app is serving: answers degrade and say so, never a 5xx. Rollouts under load
lose no request."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]


class Load:
    """`threads` clients posting /recommend in a loop until stopped; records status codes and bodies."""

    def __init__(self, url: str, threads: int = 4, k: int = 10):
        self.url, self.threads, self.k = url, threads, k
        self.results: list[tuple[int, dict | None]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, wid: int) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            i = 0
            while not self._stop.is_set():
                user = f"user{(wid * 7 + i) % 60}"
                try:
                    r = client.post("/recommend", json={"user_id": user, "k": self.k})
                    rec = (r.status_code, r.json() if r.status_code == 200 else None)
                except Exception as exc:  # noqa: BLE001 - a transport failure is a failed request
                    rec = (599, {"error": repr(exc)})
                with self._lock:
                    self.results.append(rec)
                i += 1

    def __enter__(self) -> "Load":
        for w in range(self.threads):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_for(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < deadline, f"only {self.count()} requests done"
            time.sleep(0.02)


def test_kill_triton_then_milvus_while_serving(serving_run, triton_repo, feast_store, tmp_path):
    """Private Triton + Milvus (this test kills them): ≥ 200 requests, 0 non-200; modes degrade in order."""
    import httpx

    from devservices.stack import make_app_server, start_milvus_with_index
    from devservices.triton import start_triton

    triton = start_triton(triton_repo, ["llm"], tmp_path, name="triton-kill")
    milvus = start_milvus_with_index(serving_run, tmp_path / "milvus")
    app = make_app_server(serving_run, triton.grpc_url, milvus.uri, feast_store[1])
    try:
        with Load(app.url, threads=4) as load:
            load.wait_for(80)
            triton.kill()
            mark_triton = load.count()
            load.wait_for(mark_triton + 100)
            milvus.kill()
            mark_milvus = load.count()
            load.wait_for(mark_milvus + 100)
        results = list(load.results)
        metrics = httpx.get(app.url + "/metrics").text
        ready = httpx.get(app.url + "/ready").json()
    finally:
        app.stop()
        triton.stop()
        milvus.stop()

    assert len(results) >= 280
    codes = Counter(code for code, _ in results)
    assert codes == {200: len(results)}, codes
    modes = Counter(body["mode"] for _, body in results)
    assert modes["full"] > 0 and modes["coarse_only"] > 0 and modes["popular"] > 0, modes
    tail = [body for _, body in results[mark_milvus + 20:]]
    assert tail and all(b["mode"] == "popular" and "milvus_unavailable" in b["degraded_reasons"] for b in tail)
    after_triton = [body for _, body in results[mark_triton + 20:mark_milvus]]
    assert after_triton and all("triton_unavailable" in b["degraded_reasons"] for b in after_triton)
    assert all(b["items"] and b["degraded"] == bool(b["degraded_reasons"]) for _, b in results)
    assert 'hymirec_recommend_degraded_total{reason="triton_unavailable"}' in metrics
    assert 'hymirec_recommend_requests_total{mode="coarse_only"} 0.0' not in metrics
    assert ready["ready"] is True and not ready["checks"]["triton"] and not ready["checks"]["milvus"]


def test_rollout_and_rollback_under_load_lose_no_request(app_server, triton_server):
    """N → N+1 → N on the shared Triton while 4 clients hit /recommend: every answer is 200 *and* full."""
    control = triton_server.control
    assert control.ready_versions("llm") == [1]
    with Load(app_server.url, threads=4) as load:
        load.wait_for(30)
        up = control.rollout("llm", 2)
        assert control.ready_versions("llm") == [2]
        mid = load.count()
        load.wait_for(mid + 30)
        down = control.rollback("llm")
        assert control.ready_versions("llm") == [1]
        end = load.count()
        load.wait_for(end + 30)
    results = list(load.results)
    codes = Counter(code for code, _ in results)
    assert codes == {200: len(results)}, codes
    modes = Counter(body["mode"] for _, body in results)
    assert modes == {"full": len(results)}, modes  # no request fell back during the reloads
    versions = [body["model_version"]["llm"] for _, body in results]
    assert "llm/1" in versions and "llm/2" in versions and versions[-1] == "llm/1"
    assert up["to"] == 2 and down["to"] == 1
    assert control.served_state("llm")["version"] == 1
    print(f"rollout 1→2 {up['seconds']:.2f}s, rollback 2→1 {down['seconds']:.2f}s, {len(results)} requests")
