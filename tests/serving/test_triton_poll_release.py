"""Several Triton replicas follow a release by themselves (poll mode, orchestration/releases.activate with
``triton_poll_s``): config.pbtxt pins both versions, the registry flips, then only the new version stays; requests
pinned to the release the registry names never fail, through a promote and a rollback (issue 27, deliverable 3)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.services


def test_poll_mode_replicas_switch_release_without_failed_requests(serving_run, llm_spec_, tmp_path):
    from core.releases import current_release
    from orchestration.artifact_root import ArtifactRoot
    from orchestration.releases import activate, rollback
    from serving.index import ItemIndex
    from serving.stages import Refine, StageUnavailable
    from serving.triton_server import TritonServer
    from training.export.triton_repo import add_version, pin_versions, pinned_versions

    layout, dims = serving_run["layout"], serving_run["manifest"]["dims"]
    repo = tmp_path / "triton" / "local"
    for _ in range(2):
        add_version(repo, layout.llm_onnx, llm_spec_, target="local")
    pin_versions(repo, "llm", [1])
    index = ItemIndex(str(tmp_path / "milvus.db")).start(load=False)
    try:
        collections = [index.build(np.load(layout.item_vectors), swap_alias=False).collection for _ in range(2)]
        index.point_alias(collections[0])
    finally:
        index.close()
    with ArtifactRoot(tmp_path).locked_registry() as reg:
        reg["models"] = [{"version": v, "run_dir": str(layout.root), "codebook_id": "cb",
                          "triton": {"model": "llm", "version": v},
                          "milvus": {"uri": str(tmp_path / "milvus.db"), "alias": "hymirec_items",
                                     "collection": collections[v - 1]}} for v in (1, 2)]
        reg["production"], reg["history"] = 1, []

    server = TritonServer(repo, [], poll_s=1, log_path=tmp_path / "triton.log").start()
    refine = Refine(server.grpc_url, timeout_s=10.0)
    refine.start()
    inputs = {"coarse": np.zeros((1, dims["n_coarse"], dims["d_llm"]), np.float32),
              "recent_emb": np.ones((1, 2, dims["d_item"]), np.float32), "recent_mask": np.ones((1, 2), np.float32)}
    answers, failures, stop = [], [], threading.Event()

    def load():  # a serving replica: each request pinned to the release the registry names when it starts
        while not stop.is_set():
            version = current_release(tmp_path).triton_version
            try:
                answers.append(refine.run({**inputs, "triton_version": str(version)})["model_version"])
            except StageUnavailable as exc:
                failures.append((version, str(exc)))
            time.sleep(0.02)

    thread = threading.Thread(target=load, daemon=True)
    try:
        time.sleep(2.5)  # the server polled the pin
        thread.start()
        up = activate(tmp_path, 2, triton_url=server.grpc_url, triton_poll_s=1, settle_s=2)
        time.sleep(3)  # a poll after the final pin
        assert server.control.ready_versions("llm") == [2] and pinned_versions(repo, "llm") == [2]
        down = rollback(tmp_path, triton_url=server.grpc_url, triton_poll_s=1, settle_s=2)
        time.sleep(3)
        assert server.control.ready_versions("llm") == [1] and pinned_versions(repo, "llm") == [1]
    finally:
        stop.set()
        thread.join(10)
        refine.close()
        server.stop()
    assert up["triton_loaded"]["local"] == [1, 2] and down["triton_loaded"]["local"] == [1, 2]
    assert not failures, failures[:3]
    assert {"llm/1", "llm/2"} <= set(answers) and answers[-1] == "llm/1" and len(answers) > 50
    assert json.loads((tmp_path / "registry.json").read_text())["production"] == 1
