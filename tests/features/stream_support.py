"""Helpers of the streaming tests (imported by conftest.py and the test modules): producing events, the golden
store state computed offline from the same events, running the processor in-process, reading a topic."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devservices.kafka import KafkaBroker

ROOT_DIR = Path(__file__).resolve().parents[2]
N_ITEMS = 3000
N_LAYERS = 3


# ---- events + golden state ------------------------------------------------------------------------------------
@dataclass
class Sent:
    user_id: str
    item_id: str
    time_ms: int
    partition: int
    offset: int


@dataclass
class Produced:
    topic: str
    valid: list[Sent] = field(default_factory=list)
    bad: list[tuple[str, int, int]] = field(default_factory=list)  # (expected reason, partition, offset)


def new_topic(broker: KafkaBroker, prefix: str = "ev", partitions: int | None = None) -> str:
    """A fresh topic and its DLQ, made as `hymirec stream create-topics` makes them (the broker does not
    auto-create topics)."""
    from features.producer import create_topics
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, name, partitions=partitions or broker.partitions)
    return name


def produce(broker: KafkaBroker, topic: str, events, producer=None) -> list[Sent]:
    """Publish InteractionEvents in the given order; returns where each one landed."""
    from features.producer import make_producer
    from core.schemas import encode_event
    own = producer is None
    producer = producer or make_producer(broker.bootstrap)
    futures = []
    for ev in events:
        key, value = encode_event(ev)
        futures.append((ev, producer.send(topic, key=key, value=value)))
    producer.flush()
    out = []
    for ev, fut in futures:
        md = fut.get(timeout=30)
        out.append(Sent(ev.user_id, ev.item_id, ev.event_time_ms, md.partition, md.offset))
    if own:
        producer.close()
    return out


def random_events(n: int, n_users: int, seed: int, heavy_users: int = 0, heavy_share: float = 0.0,
                  out_of_order: float = 0.0, duplicates: float = 0.0, n_items: int = N_ITEMS):
    """n events of n_users users, in time order, optionally with a few heavy users, some event times shuffled
    back (out of order) and some exact duplicates (same user, item and time) re-sent a few events later."""
    from core.schemas import InteractionEvent
    rng = np.random.default_rng(seed)
    users = [f"u{seed}-{k}" for k in range(n_users)]
    p = np.full(n_users, (1.0 - heavy_share) / max(n_users - heavy_users, 1))
    if heavy_users:
        p[:heavy_users] = heavy_share / heavy_users
    p = p / p.sum()
    picks = rng.choice(n_users, size=n, p=p)
    picks[:n_users] = np.arange(n_users)  # every user appears at least once
    rng.shuffle(picks)
    base = 1_700_000_000.0
    times = base + np.arange(n) * 0.25
    if out_of_order:
        mask = rng.random(n) < out_of_order
        times[mask] -= rng.uniform(1, 600, mask.sum())
    events = [InteractionEvent.make(users[u], f"i{rng.integers(0, n_items)}", round(float(t), 3))
              for u, t in zip(picks, times)]
    if duplicates:
        extra = []
        for k in rng.choice(n, size=int(n * duplicates), replace=False):
            extra.append((int(k) + int(rng.integers(1, 6)), events[k]))
        for pos, ev in sorted(extra, key=lambda x: -x[0]):
            events.insert(min(pos, len(events)), ev)
    return events, users


def golden_state(sent: list[Sent], codes_of: dict, max_history: int = 1024, recent_n: int = 50,
                 codebook_id: str = "") -> dict:
    """Offline reference: per user, its valid events in log order; an event whose (item, time) is among the
    user's last recent_n applied events is a duplicate; the history keeps the last max_history codes."""
    by_user: dict[str, list[Sent]] = {}
    for s in sent:
        by_user.setdefault(s.user_id, []).append(s)
    out = {}
    for user, evs in by_user.items():
        evs.sort(key=lambda s: (s.partition, s.offset))
        hist, window, applied, last, n = [], [], {}, -1, 0
        for s in evs:
            applied[s.partition] = s.offset
            if (s.item_id, s.time_ms) in window:
                continue
            hist.append([int(c) for c in codes_of[s.item_id]])
            window.append((s.item_id, s.time_ms))
            window = window[-recent_n:]
            last = max(last, s.time_ms)
            n += 1
        out[user] = {"user_id": user, "codes": hist[-max_history:], "codebook_id": codebook_id, "recent_items": [w[0] for w in window],
                     "recent_times_ms": [w[1] for w in window], "applied": dict(sorted(applied.items())),
                     "last_event_time_ms": last, "n_applied": n}
    return out


def store_snapshot(store, users) -> dict:
    states = store.read_users(list(users))
    return {u: states[u].as_dict() for u in users if u in states}


def lost_and_doubled(store, golden: dict) -> tuple[int, int]:
    """Events missing from the store and events applied twice, counted per user against the golden state."""
    got = store_snapshot(store, golden)
    lost = sum(max(g["n_applied"] - got.get(u, {}).get("n_applied", 0), 0) for u, g in golden.items())
    doubled = sum(max(got.get(u, {}).get("n_applied", 0) - g["n_applied"], 0) for u, g in golden.items())
    return lost, doubled


def assert_store_equals_golden(store, golden: dict) -> None:
    got = store_snapshot(store, golden)
    missing = sorted(set(golden) - set(got))
    assert not missing, f"{len(missing)} users missing from the store, e.g. {missing[:5]}"
    wrong = [u for u in golden if got[u] != golden[u]]
    if wrong:
        u = wrong[0]
        diff = {k: (got[u][k], golden[u][k]) for k in golden[u] if got[u][k] != golden[u][k]}
        short = {k: (str(a)[:200], str(b)[:200]) for k, (a, b) in diff.items()}
        raise AssertionError(f"{len(wrong)} of {len(golden)} users differ from the golden state; "
                             f"first {u}: {short}")


def run_processor_inline(broker, topic, store, item_table, group=None, **cfg):
    """Run the processor in this process until it has caught up (idle exit). Returns the processor."""
    from features.item_codes import ItemCodeMapper
    from features.stream import StreamConfig, StreamProcessor
    ids, codes = item_table
    mapper = cfg.pop("mapper", None) or ItemCodeMapper(ids, codes)
    config = StreamConfig(bootstrap=broker.bootstrap, topic=topic, group_id=group or f"g-{uuid.uuid4().hex[:8]}",
                          idle_exit_s=cfg.pop("idle_exit_s", 0.6), max_runtime_s=cfg.pop("max_runtime_s", 120),
                          **cfg)
    proc = StreamProcessor(config, store, mapper)
    proc.run()
    return proc


def read_topic(broker, topic: str, timeout_s: float = 10.0) -> list:
    """All records currently in a topic (a fresh consumer without group)."""
    from kafka import KafkaConsumer, TopicPartition
    ends = broker.end_offsets(topic)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        out = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(c.position(tp) < ends[tp.partition] for tp in parts):
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
        return out
    finally:
        c.close()
