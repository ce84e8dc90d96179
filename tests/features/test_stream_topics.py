"""Topics are made on purpose, never on first use: the devservice broker runs with auto.create.topics.enable=false,
`hymirec stream create-topics` makes the events topic and its DLQ with the given partitions and replication, and
the producer (replay) and the processor refuse a missing topic with a message that names the command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from stream_support import ROOT_DIR

pytestmark = [pytest.mark.services]


def _cli(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "features.stream_cli", *args], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HYMIREC_LOG": "WARNING"})


def _topics(broker) -> set[str]:
    admin = broker.admin()
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_create_topics_cli(kafka_broker):
    topic = f"made-{uuid.uuid4().hex[:8]}"
    r = _cli("create-topics", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--partitions", "6",
             "--replication-factor", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"created": [topic, f"{topic}.dlq"], "existing": [], "partitions": 6, "replication_factor": 1}
    assert len(kafka_broker.end_offsets(topic)) == 6 and len(kafka_broker.end_offsets(f"{topic}.dlq")) == 6
    again = _cli("create-topics", "--bootstrap", kafka_broker.bootstrap, "--topic", topic)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["created"] == []


def test_replication_above_the_broker_count_is_a_clear_error(kafka_broker):
    topic = f"rf-{uuid.uuid4().hex[:8]}"
    r = _cli("create-topics", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--replication-factor", "3")
    assert r.returncode == 2, r.stderr
    assert "replication factor 3" in r.stderr and "Traceback" not in r.stderr
    assert topic not in _topics(kafka_broker)


def test_the_broker_does_not_auto_create(kafka_broker):
    from kafka.errors import KafkaTimeoutError

    from features.producer import make_producer
    topic = f"typo-{uuid.uuid4().hex[:8]}"
    producer = make_producer(kafka_broker.bootstrap, max_block_ms=3000)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(topic, key=b"u", value=b"{}").get(timeout=10)
    finally:
        producer.close(timeout=5)
    assert topic not in _topics(kafka_broker)


def test_replay_and_processor_refuse_a_missing_topic(kafka_broker, tmp_path, item_codes_file):
    import pandas as pd

    from features.item_codes import StreamConfigError
    from features.producer import replay
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    frame = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "timestamp": [1.0]})
    with pytest.raises(StreamConfigError, match="create-topics"):
        replay(frame, kafka_broker.bootstrap, topic=topic)
    r = _cli("run", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--item-codes", str(item_codes_file),
             "--sqlite-path", str(tmp_path / "online.db"))
    assert r.returncode == 2, r.stderr
    assert f"'{topic}'" in r.stderr and "missing" in r.stderr and "hymirec stream create-topics" in r.stderr
    assert topic not in _topics(kafka_broker) and f"{topic}.dlq" not in _topics(kafka_broker)
