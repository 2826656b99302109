"""CloudEvents binary-mode binding for Kafka: the record value is the serialized protobuf and the
event attributes travel as `ce_*` headers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError, Message

from fte_runtime.context import current_correlation_id

CONTENT_TYPE = "application/protobuf"
SPEC_VERSION = "1.0"
# CloudEvents extension attribute carrying the correlation id (extension names are [a-z0-9]).
CORRELATION_ATTRIBUTE = "ce_correlationid"

Headers = list[tuple[str, bytes]]


def service_source(service: str) -> str:
    """The one spelling of `ce_source`: the publishing service's domain, `<service>.fte` (the
    domain its errors carry too)."""
    return f"{service}.fte"


class InvalidEvent(ValueError):
    """A record that is not a well-formed event of a known type."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    source: str
    time: datetime
    correlation_id: str | None
    message: Message


def encode(
    message: Message,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    correlation_id: str | None = None,
) -> tuple[bytes, Headers]:
    """Value and headers for a record carrying `message`."""
    return message.SerializeToString(), headers(
        message.DESCRIPTOR.full_name, source=source, event_id=event_id, time=time, correlation_id=correlation_id
    )


def headers(
    event_type: str,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    correlation_id: str | None = None,
) -> Headers:
    """The CloudEvents headers of a record whose value is a serialized `event_type` message."""
    return [
        ("content-type", CONTENT_TYPE.encode()),
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", (event_id or str(uuid.uuid4())).encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", (time or datetime.now(UTC)).isoformat().encode()),
        (CORRELATION_ATTRIBUTE, (correlation_id or current_correlation_id()).encode()),
    ]


def _header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers or ():
        try:
            out[key] = value.decode() if value is not None else ""
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"header {key!r} is not UTF-8") from exc
    return out


def decode(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    types: Mapping[str, type[Message]],
) -> Event:
    """Parse a record into an Event; `types` maps each accepted `ce_type` to its message class.

    Raises InvalidEvent, with a reason fit for a dead-letter record, for anything else.
    """
    attrs = _header_map(headers)
    if attrs.get("ce_specversion") != SPEC_VERSION:
        raise InvalidEvent(f"not a CloudEvent: ce_specversion is {attrs.get('ce_specversion')!r}, expected '1.0'")
    if attrs.get("content-type") != CONTENT_TYPE:
        raise InvalidEvent(f"content-type is {attrs.get('content-type')!r}, expected {CONTENT_TYPE!r}")
    missing = [k for k in ("ce_id", "ce_type", "ce_source", "ce_time") if not attrs.get(k)]
    if missing:
        raise InvalidEvent(f"missing CloudEvents attributes: {', '.join(missing)}")
    event_type = attrs["ce_type"]
    cls = types.get(event_type)
    if cls is None:
        raise InvalidEvent(f"unexpected event type {event_type!r}")
    try:
        time = datetime.fromisoformat(attrs["ce_time"])
    except ValueError as exc:
        raise InvalidEvent(f"ce_time {attrs['ce_time']!r} is not an RFC 3339 time") from exc
    if value is None:
        raise InvalidEvent("record has no value")
    message = cls()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"value is not a valid {event_type}: {exc}") from exc
    return Event(
        id=attrs["ce_id"],
        type=event_type,
        source=attrs["ce_source"],
        time=time,
        correlation_id=attrs.get(CORRELATION_ATTRIBUTE),
        message=message,
    )


def type_map(*classes: type[Message]) -> dict[str, type[Message]]:
    return {cls.DESCRIPTOR.full_name: cls for cls in classes}
