"""New items between retrains: codes the codebook-refresh DAG publishes to the online store reach a *running*
stream processor, so a new item's events are applied within seconds instead of going to the DLQ until the next
retrain (issue 27). The mapper part runs on a real SQLite store; the end-to-end part against the real broker."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stream_support import N_LAYERS, new_topic, produce, random_events, read_topic


def test_mapper_picks_up_published_codes_after_the_recheck(store_factory, item_table):
    from features.item_codes import ItemCodeMapper, write_item_codes

    store = store_factory("sqlite")
    ids, codes = item_table
    calls = []

    def published(wanted):
        calls.append(list(wanted))
        return store.read_item_codes(wanted)

    mapper = ItemCodeMapper(ids, codes, published=published, recheck_s=0.3)
    assert mapper.lookup(["i1", "new-a"]).keys() == {"i1"}
    assert calls == [["new-a"]]
    write_item_codes(store, ["new-a"], np.full((1, N_LAYERS), 7, np.uint16), codebook_id="cb-1")
    assert "new-a" not in mapper.lookup(["new-a"]) and len(calls) == 1  # not asked again before recheck_s
    time.sleep(0.35)
    found = mapper.lookup(["new-a", "i2"])
    assert found.keys() == {"new-a", "i2"} and found["new-a"].tolist() == [7] * N_LAYERS
    assert mapper.picked_up == 1 and mapper.pop_new() == {}  # already in the store: nothing to write back
    assert len(calls) == 2 and mapper.lookup(["new-a"])  # cached from now on
    assert len(calls) == 2


def test_published_codes_of_the_wrong_width_are_ignored(item_table):
    from features.item_codes import ItemCodeMapper

    ids, codes = item_table
    mapper = ItemCodeMapper(ids, codes, published=lambda wanted: {w: np.zeros(N_LAYERS + 2) for w in wanted},
                            recheck_s=0.0)
    assert mapper.lookup(["odd"]) == {} and mapper.picked_up == 0


@pytest.mark.services
def test_running_processor_applies_a_new_item_once_published(kafka_broker, store_factory, item_table):
    from features.item_codes import ItemCodeMapper, write_item_codes
    from features.store import open_store
    from features.stream import StreamConfig, StreamProcessor
    from core.schemas import InteractionEvent

    store = store_factory("sqlite")
    topic = new_topic(kafka_broker, "newitems")
    ids, codes = item_table
    config = StreamConfig(bootstrap=kafka_broker.bootstrap, topic=topic, group_id=f"g-{topic}",
                          unknown_recheck_s=2.0)
    proc = StreamProcessor(config, store, ItemCodeMapper(ids, codes))
    runner = threading.Thread(target=proc.run, daemon=True)
    runner.start()
    try:
        known, _ = random_events(200, 20, seed=5)
        new = lambda n, t0: [InteractionEvent(user_id=f"u-new-{k % 4}", item_id="brand-new-item",  # noqa: E731
                                              event_time=t0 + k) for k in range(n)]
        produce(kafka_broker, topic, known + new(8, 1.7e9))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.totals.dlq.get("unknown_item", 0) < 8:
            time.sleep(0.2)
        assert proc.totals.dlq.get("unknown_item", 0) == 8  # not published yet: dead-lettered, as before

        # the refresh DAG publishes the new item's codes (its own store handle, as another process would)
        with open_store(store.config) as dag_store:
            write_item_codes(dag_store, ["brand-new-item"], np.full((1, N_LAYERS), 5, np.uint16), codebook_id="cb")
        published_at = time.monotonic()
        # events for the new item keep coming (as they would); those read before the processor asks the store
        # again (unknown_recheck_s after it last found nothing) still go to the DLQ, the later ones are applied
        applied, rounds = {}, 0
        while time.monotonic() - published_at < 60:
            produce(kafka_broker, topic, new(4, 1.7e9 + 100 + 4 * rounds))
            rounds += 1
            time.sleep(0.5)
            applied = {u: s for u, s in store.read_users([f"u-new-{k}" for k in range(4)]).items()
                       if "brand-new-item" in s.recent_items}
            if len(applied) == 4:
                break
        seconds = time.monotonic() - published_at
        time.sleep(1.0)
        dlq_after = proc.totals.dlq.get("unknown_item", 0)
        produce(kafka_broker, topic, new(8, 1.7e9 + 1000))
        time.sleep(2.0)
    finally:
        proc.request_stop()
        runner.join(30)
    assert len(applied) == 4, f"new item applied for {len(applied)} of 4 users within 60 s; {proc.totals}"
    assert seconds < config.unknown_recheck_s + 10, seconds
    assert all(s.codes[-1].tolist() == [5] * N_LAYERS for s in applied.values())
    assert proc.totals.dlq.get("unknown_item", 0) == dlq_after  # once picked up, no event of it is dead-lettered
    assert dlq_after - 8 <= 4 * (config.unknown_recheck_s / 0.5 + 2)  # only those read inside the recheck window
    dlq = [r for r in read_topic(kafka_broker, config.dlq) if b"brand-new-item" in r.value]
    assert len(dlq) == dlq_after
