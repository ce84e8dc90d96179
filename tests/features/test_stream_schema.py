"""The versioned event contract: every kind of bad message maps to its DLQ reason."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.schemas import (DLQ_REASONS, MAX_EVENT_BYTES, BadEvent, InteractionEvent, encode_event,
                              parse_event)

GOOD = {"schema_version": 1, "user_id": "u1", "item_id": "i1", "event_time": 1700000000.5, "event_type": "click"}


def _v(d) -> bytes:
    return json.dumps(d).encode()


def test_valid_roundtrip():
    ev = parse_event(_v(GOOD), b"u1")
    assert ev.user_id == "u1" and ev.event_time_ms == 1700000000500 and ev.event_type.value == "click"
    key, value = encode_event(ev)
    assert key == b"u1" and parse_event(value, key) == ev
    assert parse_event(_v({k: v for k, v in GOOD.items() if k != "event_type"}), b"u1").event_type.value \
        == "interaction"


BAD = [
    ("empty", b"", b"u1"),
    ("empty", None, b"u1"),
    ("oversized", _v({**GOOD, "item_id": "x" * (MAX_EVENT_BYTES + 10)}), b"u1"),
    ("not_json", b"\xff\xfe\x00garbage", b"u1"),
    ("not_json", b'{"schema_version": 1, "user_id": ', b"u1"),
    ("not_object", b"[1, 2, 3]", b"u1"),
    ("not_object", b'"just a string"', b"u1"),
    ("unsupported_version", _v({**GOOD, "schema_version": 2}), b"u1"),
    ("unsupported_version", _v({**GOOD, "schema_version": "1"}), b"u1"),
    ("missing_field", _v({k: v for k, v in GOOD.items() if k != "item_id"}), b"u1"),
    ("missing_field", _v({k: v for k, v in GOOD.items() if k != "schema_version"}), b"u1"),
    ("invalid_field", _v({**GOOD, "event_time": -5}), b"u1"),
    ("invalid_field", _v({**GOOD, "event_time": 1.7e12}), b"u1"),
    ("invalid_field", _v({**GOOD, "event_type": "teleport"}), b"u1"),
    ("invalid_field", _v({**GOOD, "user_id": 17}), b"u1"),
    ("invalid_field", _v({**GOOD, "item_id": ""}), b"u1"),
    ("invalid_field", b'{"schema_version": 1, "user_id": "u1", "item_id": "i", "event_time": NaN}', b"u1"),
    ("unknown_field", _v({**GOOD, "price": 3}), b"u1"),
    ("bad_key", _v(GOOD), None),
    ("bad_key", _v(GOOD), b"u2"),
    ("bad_key", _v(GOOD), b"\xff"),
]


@pytest.mark.parametrize("reason,value,key", BAD)
def test_bad_messages_have_reasons(reason, value, key):
    with pytest.raises(BadEvent) as info:
        parse_event(value, key)
    assert info.value.reason == reason
    assert info.value.reason in DLQ_REASONS


def test_key_check_can_be_disabled():
    assert parse_event(_v(GOOD), None, check_key=False).user_id == "u1"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=10)))
def test_arbitrary_bytes_never_crash(value, key):
    """Any bytes either parse or raise BadEvent with a known reason (never another exception)."""
    try:
        parse_event(value, key)
    except BadEvent as exc:
        assert exc.reason in DLQ_REASONS


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: s == s.strip() and all(ord(c) >= 32 for c in s)),
       st.text(min_size=1, max_size=40).filter(lambda s: s == s.strip() and all(ord(c) >= 32 for c in s)),
       st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_any_valid_event_roundtrips(user, item, t):
    ev = InteractionEvent.make(user, item, t)
    key, value = encode_event(ev)
    assert parse_event(value, key) == ev


@pytest.mark.parametrize("timeouts, bad", [
    ((3000, 3000, 300000), "heartbeat"),        # heartbeat must be shorter than the session timeout
    ((1000, 6000, 5000), "max_poll_interval"),  # a rebalance timeout below the session timeout
    ((0, 6000, 20000), "heartbeat"),
])
def test_stream_config_refuses_inconsistent_timeouts(timeouts, bad):
    from features.item_codes import StreamConfigError
    from features.stream import StreamConfig
    heartbeat, session, poll = timeouts
    with pytest.raises(StreamConfigError, match=bad):
        StreamConfig(heartbeat_interval_ms=heartbeat, session_timeout_ms=session,
                     max_poll_interval_ms=poll).validate()
    assert StreamConfig(heartbeat_interval_ms=1000, session_timeout_ms=6000,
                        max_poll_interval_ms=20000).validate()
