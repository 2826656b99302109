"""CloudEvents binary-mode envelope: round trip, and a clear error for anything else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2, message_events_pb2
from fte_runtime import envelope
from fte_runtime.context import correlation_id_var

TYPES = envelope.type_map(message_events_pb2.MessageReceived)


def sample() -> message_events_pb2.MessageReceived:
    msg = message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WHATSAPP,
        channel_message_id="SM123",
        sender=message_events_pb2.Sender(whatsapp_address="whatsapp:+14155550100"),
        text_body="hello",
    )
    msg.received_time.FromDatetime(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    return msg


def test_round_trip_keeps_message_and_attributes() -> None:
    value, headers = envelope.encode(sample(), source="/fte/gateway", event_id="e-1", correlation_id="c-1")
    keys = dict(headers)
    assert keys["content-type"] == b"application/protobuf"
    assert keys["ce_specversion"] == b"1.0"
    assert keys["ce_type"] == b"fte.events.v1.MessageReceived"
    event = envelope.decode(value, headers, TYPES)
    assert event.message == sample()
    assert (event.id, event.source, event.correlation_id) == ("e-1", "/fte/gateway", "c-1")
    assert event.time.tzinfo is not None


def test_correlation_id_defaults_to_the_current_request() -> None:
    token = correlation_id_var.set("req-42")
    try:
        _, headers = envelope.encode(sample(), source="s")
    finally:
        correlation_id_var.reset(token)
    assert dict(headers)[envelope.CORRELATION_ATTRIBUTE] == b"req-42"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda v, h: (v, []), "not a CloudEvent"),
        (lambda v, h: (v, [(k, x) for k, x in h if k != "ce_id"]), "missing CloudEvents attributes: ce_id"),
        (lambda v, h: (v, [(k, b"text/plain" if k == "content-type" else x) for k, x in h]), "content-type"),
        (lambda v, h: (b"\xff\xff\xff\xff", h), "not a valid fte.events.v1.MessageReceived"),
        (lambda v, h: (None, h), "no value"),
        (lambda v, h: (v, [(k, b"yesterday" if k == "ce_time" else x) for k, x in h]), "RFC 3339"),
        (lambda v, h: (v, [(k, b"\xff" if k == "ce_source" else x) for k, x in h]), "not UTF-8"),
    ],
)
def test_garbage_is_rejected_with_a_reason(mutate, expected) -> None:  # type: ignore[no-untyped-def]
    value, headers = envelope.encode(sample(), source="s")
    bad_value, bad_headers = mutate(value, headers)
    with pytest.raises(envelope.InvalidEvent, match=expected):
        envelope.decode(bad_value, bad_headers, TYPES)


def test_unexpected_event_type_is_rejected() -> None:
    value, headers = envelope.encode(delivery_events_pb2.DeliveryStatusChanged(), source="s")
    with pytest.raises(envelope.InvalidEvent, match="unexpected event type"):
        envelope.decode(value, headers, TYPES)
