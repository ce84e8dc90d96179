"""A running stream processor follows the release registry (features/stream_release.py; issue 27, deliverables 3
and 4): after the `production` pointer flips, events are mapped with the new release's item codes, every history
it writes is re-encoded under the new codebook first (never two codebooks in one row), and no event is lost."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from stream_support import new_topic, produce


def _release(root, version: int, ids: list[str], seed: int):
    """A run directory with item ids, a fitted codebook and the items' codes; its registry entry."""
    from core.artifacts import sha256_file
    from features.codebook import CodebookConfig, ResidualCodebook

    run = root / f"run{version}"
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(ids), 16)).astype(np.float32)
    codebook = ResidualCodebook.fit(emb, CodebookConfig(n_layers=3, codebook_size=16, kmeans_iters=5, seed=seed))
    codebook.save(run / "codebook.npz")
    codes = np.concatenate([np.zeros((1, 3), np.uint16), codebook.encode(emb).astype(np.uint16)])
    (run / "item_ids.json").write_text(json.dumps(["<pad>", *ids]))
    np.save(run / "item_codes.npy", codes)
    return {"version": version, "run_dir": str(run), "codebook_id": sha256_file(run / "codebook.npz"),
            "triton": {"model": "llm", "version": version},
            "milvus": {"uri": "unused", "alias": "hymirec_items", "collection": f"hymirec_items_v{version}"}}


def _flip(root, version: int) -> None:
    from orchestration.artifact_root import ArtifactRoot

    with ArtifactRoot(root).locked_registry() as reg:
        if reg.get("production") is not None:
            reg.setdefault("history", []).append(reg["production"])
        reg["production"] = version


def _events(users, items, n, t0):
    from core.schemas import InteractionEvent

    return [InteractionEvent(user_id=users[k % len(users)], item_id=items[(7 * k) % len(items)],
                             event_time=t0 + k) for k in range(n)]


@pytest.mark.services
def test_processor_switches_release_and_migrates_histories(kafka_broker, store_factory, tmp_path):
    from features.codebook import ResidualCodebook
    from features.codebook_migration import translate
    from features.stream import StreamConfig, StreamProcessor
    from features.stream_release import ReleaseTracker
    from orchestration.artifact_root import ArtifactRoot

    root = tmp_path / "artifacts"
    items = [f"it{k}" for k in range(64)]
    first, second = _release(root, 1, items, seed=1), _release(root, 2, items, seed=2)
    assert first["codebook_id"] != second["codebook_id"]
    with ArtifactRoot(root).locked_registry() as reg:
        reg["models"] = [first, second]
    _flip(root, 1)

    store = store_factory("sqlite")
    topic = new_topic(kafka_broker, "release")
    tracker = ReleaseTracker(root, every_s=0.2)
    proc = StreamProcessor(StreamConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group_id=f"g-{topic}"),
                           store, tracker.start(), release=tracker)
    runner = threading.Thread(target=proc.run, daemon=True)
    runner.start()
    users = [f"ru{k}" for k in range(6)]
    reader = store_factory("sqlite")  # its own handle, as serving would read
    try:
        produce(kafka_broker, topic, _events(users, items, 60, 1.7e9))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.totals.applied < 60:
            time.sleep(0.1)
        before = reader.read_users(users)
        assert {s.codebook_id for s in before.values()} == {first["codebook_id"]}

        _flip(root, 2)  # the promote of release 2
        time.sleep(0.5)
        produce(kafka_broker, topic, _events(users, items, 60, 1.7e9 + 1000))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.totals.applied < 120:
            time.sleep(0.1)
    finally:
        proc.request_stop()
        runner.join(30)
    after = reader.read_users(users)
    assert proc.totals.applied == 120 and sum(s.n_applied for s in after.values()) == 120  # none lost
    assert proc.metrics.snapshot()["release_switches"] == 1 and tracker.migrated == len(users)
    cb1 = ResidualCodebook.load(root / "run1" / "codebook.npz")
    cb2 = ResidualCodebook.load(root / "run2" / "codebook.npz")
    table2 = dict(zip(items, np.load(root / "run2" / "item_codes.npy")[1:]))
    for user in users:
        old, new = before[user], after[user]
        assert new.codebook_id == second["codebook_id"]
        n_old = len(old.codes)
        # the history written under release 1 was re-encoded (decode with cb1 -> encode with cb2) ...
        np.testing.assert_array_equal(new.codes[:n_old], translate(old.codes, cb1, cb2))
        # ... and the events after the flip carry release 2's item codes
        np.testing.assert_array_equal(new.codes[n_old:], np.stack([table2[i] for i in new.recent_items[-10:]]))
