"""Poison messages: every bad one lands in the DLQ with the right reason and source headers, no valid event is
lost, the consumer keeps running, and the DLQ counters match. Unknown items are encoded on the fly when an
embedding exists, else dead-lettered."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from core.schemas import MAX_EVENT_BYTES
from stream_support import (Sent, assert_store_equals_golden, golden_state, new_topic, random_events,
                            read_topic, run_processor_inline)

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _bad_message(kind: str, k: int, rng) -> tuple[bytes | None, bytes | None]:
    user = f"p-{k % 37}"
    good = {"schema_version": 1, "user_id": user, "item_id": f"i{k % 100}", "event_time": 1.7e9 + k,
            "event_type": "view"}
    dumps = lambda d: json.dumps(d).encode()  # noqa: E731
    return {
        "empty": lambda: (user.encode(), b""),
        "oversized": lambda: (user.encode(), dumps({**good, "item_id": "x" * (MAX_EVENT_BYTES + 1)})),
        "not_json": lambda: (user.encode(), bytes(rng.integers(128, 256, 40, dtype=np.uint8))),
        "not_object": lambda: (user.encode(), b"[1, 2, 3]"),
        "unsupported_version": lambda: (user.encode(), dumps({**good, "schema_version": 99})),
        "missing_field": lambda: (user.encode(), dumps({k2: v for k2, v in good.items() if k2 != "item_id"})),
        "invalid_field": lambda: (user.encode(), dumps({**good, "event_time": "yesterday"})),
        "unknown_field": lambda: (user.encode(), dumps({**good, "session": "abc"})),
        "bad_key": lambda: (b"someone-else", dumps(good)),
        "unknown_item": lambda: (user.encode(), dumps({**good, "item_id": f"never-seen-{k}"})),
    }[kind]()


KINDS = ["empty", "oversized", "not_json", "not_object", "unsupported_version", "missing_field", "invalid_field",
         "unknown_field", "bad_key", "unknown_item"]


def test_poison_messages_go_to_dlq(kafka_broker, store_factory, item_table):
    from features.producer import make_producer
    from core.schemas import encode_event
    rng = np.random.default_rng(21)
    topic = new_topic(kafka_broker, "poison")
    valid_events, users = random_events(11_000, 500, seed=21)
    producer = make_producer(kafka_broker.bootstrap)
    futures, expected_bad = [], []
    vi = 0
    for k in range(12_100):  # ~1 bad in 11
        if k % 11 == 5:
            kind = KINDS[(k // 11) % len(KINDS)]
            key, value = _bad_message(kind, k, rng)
            futures.append(("bad", kind, producer.send(topic, key=key, value=value)))
        else:
            ev = valid_events[vi]
            vi += 1
            key, value = encode_event(ev)
            futures.append(("ok", ev, producer.send(topic, key=key, value=value)))
    producer.flush()
    sent: list[Sent] = []
    for kind, payload, fut in futures:
        md = fut.get(timeout=30)
        if kind == "ok":
            sent.append(Sent(payload.user_id, payload.item_id, payload.event_time_ms, md.partition, md.offset))
        else:
            expected_bad.append((payload, md.partition, md.offset))
    producer.close()
    assert len(expected_bad) >= 1_000 and len({b[0] for b in expected_bad}) >= 8

    store = store_factory("sqlite")
    proc = run_processor_inline(kafka_broker, topic, store, item_table)
    # valid events: none lost
    ids, codes = item_table
    assert_store_equals_golden(store, golden_state(sent, dict(zip(ids, codes))))
    # DLQ: every bad message, once, with its reason and source coordinates; original key/value kept
    dlq = read_topic(kafka_broker, f"{topic}.dlq")
    assert len(dlq) == len(expected_bad)
    by_source = {}
    for rec in dlq:
        h = {k: v.decode() for k, v in rec.headers}
        assert h["dlq.source_topic"] == topic and h["dlq.error_class"] and h["dlq.error_message"]
        by_source[(int(h["dlq.source_partition"]), int(h["dlq.source_offset"]))] = (h["dlq.reason"], rec)
    for reason, part, off in expected_bad:
        assert (part, off) in by_source, (reason, part, off)
        assert by_source[(part, off)][0] == reason, (part, off)
    oversized = [rec for reason, rec in by_source.values() if reason == "oversized"]
    assert oversized and len(oversized[0].value) > MAX_EVENT_BYTES
    # counters
    snap = proc.metrics.snapshot()
    want = {kind: sum(1 for b in expected_bad if b[0] == kind) for kind in KINDS}
    assert snap["dlq"] == want
    assert snap["events_in"] == len(futures) and snap["applied"] == len(sent)


def test_unknown_items_encoded_on_the_fly(kafka_broker, store_factory, item_table):
    """An item missing from the codes table is encoded with the codebook when its embedding is known (and its
    codes are written to the item_codes view); without an embedding it goes to the DLQ as unknown_item."""
    from core.schemas import InteractionEvent
    from features.item_codes import ItemCodeMapper
    from stream_support import produce
    try:
        from features.codebook import CodebookConfig, ResidualCodebook
        rng = np.random.default_rng(5)
        codebook = ResidualCodebook.fit(rng.normal(size=(400, 16)).astype(np.float32),
                                        CodebookConfig(n_layers=3, codebook_size=16, kmeans_iters=5))
    except ImportError:  # the codebook layer is optional here: any object with encode() [N,d] -> [N,L] works
        class _Nearest:
            def __init__(self):
                self.c = np.random.default_rng(5).normal(size=(3, 16, 16))

            def encode(self, x):
                return np.stack([np.argmax(x @ c.T, axis=1) for c in self.c], 1).astype(np.uint16)
        codebook = _Nearest()
        rng = np.random.default_rng(5)
    new_items = {f"new-{k}": rng.normal(size=16).astype(np.float32) for k in range(20)}
    ids, codes = item_table
    mapper = ItemCodeMapper(ids, codes, codebook=codebook, embeddings=new_items)
    topic = new_topic(kafka_broker, "newitems")
    events = [InteractionEvent.make(f"nu{k % 10}", f"new-{k % 20}" if k % 3 else f"i{k}", 1.7e9 + k)
              for k in range(300)]
    events += [InteractionEvent.make("nu0", "ghost-item", 1.8e9)]
    sent = produce(kafka_broker, topic, events)
    store = store_factory("redis")
    proc = run_processor_inline(kafka_broker, topic, store, item_table, mapper=mapper)
    snap = proc.metrics.snapshot()
    assert snap["encoded"] == 20 and snap["dlq"]["unknown_item"] == 1
    expected = dict(zip(new_items, codebook.encode(np.stack(list(new_items.values())))))
    stored = store.read_item_codes(list(new_items))
    assert {k: v.tolist() for k, v in stored.items()} == {k: np.asarray(v).tolist() for k, v in expected.items()}
    codes_of = {**dict(zip(ids, codes)), **expected}
    assert_store_equals_golden(store, golden_state([s for s in sent if s.item_id != "ghost-item"], codes_of))
