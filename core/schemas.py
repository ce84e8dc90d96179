"""Versioned event contract of the ``interactions`` topic, and the dead-letter (DLQ) contract.

One Kafka message = one interaction::

    key   = user id, UTF-8 (all events of a user land on one partition, so they stay in order)
    value = JSON object, UTF-8, at most MAX_EVENT_BYTES:
            {"schema_version": 1, "user_id": "u42", "item_id": "i7", "event_time": 1700000000.25,
             "event_type": "click"}

``event_time`` is unix seconds (int or float; milliseconds are kept). Unknown fields are rejected, so a
producer that adds a field has to bump ``schema_version``; the processor accepts only versions listed in
``SUPPORTED_VERSIONS``.

:func:`parse_event` turns raw bytes into an :class:`InteractionEvent` or raises :class:`BadEvent` whose
``reason`` is one of :data:`DLQ_REASONS` (the value of the ``dlq.reason`` header of the DLQ message).
"""
from __future__ import annotations

import json
import math
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_EVENT_BYTES = 4096
MAX_ID_CHARS = 256
MAX_EVENT_TIME = 1e11  # unix seconds (year ~5138): anything above is a unit mistake (ms / us)

# Why a message went to the DLQ (the `dlq.reason` header). Stable names: dashboards and alerts use them.
DLQ_REASONS = (
    "empty",                # null / zero-length value (e.g. a tombstone)
    "oversized",            # value longer than max_event_bytes
    "not_json",             # not UTF-8, or not valid JSON
    "not_object",           # valid JSON, but not an object
    "unsupported_version",  # schema_version not in SUPPORTED_VERSIONS
    "missing_field",        # a required field is absent
    "invalid_field",        # wrong type or out-of-range value
    "unknown_field",        # a field the schema version does not define
    "bad_key",              # message key missing or not equal to user_id
    "unknown_item",         # item has no codes and no embedding to encode it from
)

# Headers of every DLQ message (values are UTF-8 bytes). The DLQ message keeps the original key and value.
DLQ_HEADERS = (
    "dlq.reason",            # one of DLQ_REASONS
    "dlq.error_class",       # Python exception class that rejected it (e.g. ValidationError, BadEvent)
    "dlq.error_message",     # human readable, at most 1 KiB
    "dlq.source_topic",
    "dlq.source_partition",
    "dlq.source_offset",
    "dlq.processor",         # consumer group id of the processor
)


class EventType(str, Enum):
    view = "view"
    click = "click"
    cart = "cart"
    purchase = "purchase"
    rate = "rate"
    interaction = "interaction"  # generic: datasets without an event type


class InteractionEvent(BaseModel):
    """Schema version 1 of an interaction event."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    item_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    event_time: float = Field(ge=0, lt=MAX_EVENT_TIME, allow_inf_nan=False)
    event_type: EventType = EventType.interaction

    @field_validator("user_id", "item_id")
    @classmethod
    def _printable(cls, v: str) -> str:
        if v != v.strip() or any(ord(c) < 32 for c in v):
            raise ValueError("ids must not have surrounding whitespace or control characters")
        return v

    @property
    def event_time_ms(self) -> int:
        return int(round(self.event_time * 1000))

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":")).encode()

    @classmethod
    def make(cls, user_id: Any, item_id: Any, event_time: float,
             event_type: str | EventType = EventType.interaction) -> "InteractionEvent":
        return cls(user_id=str(user_id), item_id=str(item_id), event_time=float(event_time),
                   event_type=EventType(event_type))


class BadEvent(ValueError):
    """A message that cannot become an event. ``reason`` is one of DLQ_REASONS."""

    def __init__(self, reason: str, message: str, error_class: str | None = None):
        assert reason in DLQ_REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message
        self.error_class = error_class or type(self).__name__


_MODELS = {1: InteractionEvent}


def _reason_from_validation(err: ValidationError) -> str:
    kinds = {e["type"] for e in err.errors()}
    if "missing" in kinds:
        return "missing_field"
    if "extra_forbidden" in kinds:
        return "unknown_field"
    return "invalid_field"


def parse_event(value: bytes | None, key: bytes | None = None,
                max_bytes: int = MAX_EVENT_BYTES, check_key: bool = True) -> InteractionEvent:
    """Validate one raw message; raise :class:`BadEvent` with a DLQ reason when it is not a valid event."""
    if value is None or len(value) == 0:
        raise BadEvent("empty", "message value is null or empty")
    if len(value) > max_bytes:
        raise BadEvent("oversized", f"message value is {len(value)} bytes (limit {max_bytes})")
    try:
        payload = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadEvent("not_json", f"value is not UTF-8: {exc}", type(exc).__name__) from None
    except ValueError as exc:
        raise BadEvent("not_json", f"value is not JSON: {exc}", type(exc).__name__) from None
    if not isinstance(payload, dict):
        raise BadEvent("not_object", f"JSON value is a {type(payload).__name__}, expected an object")
    if "schema_version" not in payload:
        raise BadEvent("missing_field", "schema_version is required")
    version = payload["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version not in _MODELS:
        raise BadEvent("unsupported_version",
                       f"schema_version {version!r} is not supported (supported: {list(SUPPORTED_VERSIONS)})")
    if isinstance(payload.get("event_time"), float) and not math.isfinite(payload["event_time"]):
        raise BadEvent("invalid_field", "event_time must be finite")
    try:
        event = _MODELS[version].model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "value"
        raise BadEvent(_reason_from_validation(exc), f"{loc}: {first.get('msg')}",
                       "ValidationError") from None
    if check_key:
        if key is None:
            raise BadEvent("bad_key", "message key is missing (it must be the user id)")
        try:
            key_str = key.decode("utf-8")
        except UnicodeDecodeError:
            raise BadEvent("bad_key", "message key is not UTF-8") from None
        if key_str != event.user_id:
            raise BadEvent("bad_key", f"message key {key_str[:64]!r} != user_id {event.user_id[:64]!r}")
    return event


def encode_event(event: InteractionEvent) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka message for ``event``."""
    return event.user_id.encode(), event.to_json_bytes()
