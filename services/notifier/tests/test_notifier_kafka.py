"""Delivery statuses from the real broker, and outcome events published to it."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2
from fte.notifier.v1 import notifier_pb2, notifier_service_pb2
from fte_runtime import envelope, topics
from fte_runtime.kafka import EventPublisher, ensure_topics, make_producer
from fte_runtime.settings import KafkaSettings
from fte_stack.broker import TansuBroker
from fte_stack.fakes.twilio import FakeTwilio
from fte_stack.procs import free_port
from notifier_helpers import NotifierFactory, provider_env, wait_final, whatsapp_request  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka

S = common_pb2
OUTCOMES = envelope.type_map(
    delivery_events_pb2.ReplyDelivered, delivery_events_pb2.DeliveryFailed, delivery_events_pb2.ReplyStatusChanged
)


def status_event(
    provider_id: str, status: common_pb2.DeliveryStatus.ValueType, code: str = "", text: str = ""
) -> delivery_events_pb2.DeliveryStatusChanged:
    event = delivery_events_pb2.DeliveryStatusChanged(
        channel=S.CHANNEL_WHATSAPP, provider_message_id=provider_id, status=status, error_code=code, error_message=text
    )
    event.occurred_time.FromDatetime(datetime.now(UTC))
    return event


async def wait_status(n: object, name: str, want: int, timeout: float = 30) -> notifier_pb2.Delivery:
    deadline = time.monotonic() + timeout
    while True:
        resp = await n.stub.GetDelivery(notifier_service_pb2.GetDeliveryRequest(name=name))  # type: ignore[attr-defined]
        if resp.delivery.status == want:
            return resp.delivery  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {resp.delivery.status}, expected {want}")
        await asyncio.sleep(0.05)


async def test_statuses_apply_forward_only_and_outcomes_are_published(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio, kafka_settings: KafkaSettings
) -> None:
    fake_twilio.add_invalid_number("+12025550123")
    n = await start_notifier(
        **provider_env(None, fake_twilio),
        kafka_enabled=True,
        kafka_bootstrap=kafka_settings.kafka_bootstrap,
        kafka_idempotence=kafka_settings.kafka_idempotence,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        status_consumer_group=f"notifier-test-{uuid.uuid4().hex[:8]}",
    )
    ticket = f"T-{uuid.uuid4().hex[:8]}"
    long_text = " ".join(f"Sentence {i} of a long answer about the billing settings page." for i in range(40))
    two_parts = await n.stub.SendMessage(whatsapp_request(long_text, ticket_id=ticket))
    later_fails = await n.stub.SendMessage(whatsapp_request("This one bounces later.", ticket_id=ticket))
    invalid = await n.stub.SendMessage(whatsapp_request("Hello.", recipient="whatsapp:+12025550123", ticket_id=ticket))
    d1 = await wait_final(n.stub, two_parts.delivery.name)
    d2 = await wait_final(n.stub, later_fails.delivery.name)
    d3 = await wait_final(n.stub, invalid.delivery.name)
    assert d1.status == S.DELIVERY_STATUS_SENT
    assert len(d1.provider_message_ids) == 2
    assert d3.status == S.DELIVERY_STATUS_FAILED

    producer = make_producer(kafka_settings, "test-gateway")
    await producer.start()
    try:
        pub = EventPublisher(producer, "gateway.fte")
        p0, p1 = d1.provider_message_ids

        async def send(*events: delivery_events_pb2.DeliveryStatusChanged) -> None:
            for e in events:
                await pub.publish(topics.DELIVERY_STATUS, e, key=e.provider_message_id)

        # One part delivered is not the whole message delivered.
        await send(status_event(p0, S.DELIVERY_STATUS_DELIVERED))
        await send(status_event(p1, S.DELIVERY_STATUS_DELIVERED))
        await wait_status(n, d1.name, S.DELIVERY_STATUS_DELIVERED)
        # A poison record and stale or repeated statuses change nothing; later ones still apply.
        await producer.send_and_wait(topics.DELIVERY_STATUS, value=b"garbage", key=p0.encode())
        await send(
            status_event(p0, S.DELIVERY_STATUS_SENT),
            status_event(p0, S.DELIVERY_STATUS_READ),
            status_event(p0, S.DELIVERY_STATUS_READ),
            status_event(p1, S.DELIVERY_STATUS_READ),
            status_event(p1, S.DELIVERY_STATUS_FAILED, "30008", "Unknown error"),
        )
        done = await wait_status(n, d1.name, S.DELIVERY_STATUS_READ)
        assert done.last_error == ""
        # A message the provider later reports undeliverable becomes FAILED with its reason.
        await send(status_event(d2.provider_message_ids[0], S.DELIVERY_STATUS_FAILED, "63016", "Outside window"))
        failed = await wait_status(n, d2.name, S.DELIVERY_STATUS_FAILED)
        assert failed.last_error == "Outside window"
        await asyncio.sleep(0.5)
        assert (await wait_status(n, d1.name, S.DELIVERY_STATUS_READ)).status == S.DELIVERY_STATUS_READ
    finally:
        await producer.stop()

    # Outcomes for the agent, keyed by ticket: sent x2 (ReplyDelivered), failed x2 (DeliveryFailed),
    # and the whole two-part message delivered, then read (ReplyStatusChanged).
    consumer = AIOKafkaConsumer(
        topics.DELIVERY_OUTCOMES, bootstrap_servers=kafka_settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[str, list[object]] = {}
    try:
        async with asyncio.timeout(30):
            while sum(len(v) for v in found.values()) < 6:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        if record.key != ticket.encode():
                            continue
                        event = envelope.decode(record.value, record.headers, OUTCOMES)
                        found.setdefault(event.message.request_id, []).append(event.message)  # type: ignore[attr-defined]
    finally:
        await consumer.stop()
    ok, delivered, read = found[d1.request_id]
    assert isinstance(ok, delivery_events_pb2.ReplyDelivered)
    assert isinstance(delivered, delivery_events_pb2.ReplyStatusChanged)
    assert isinstance(read, delivery_events_pb2.ReplyStatusChanged)
    assert [delivered.status, read.status] == [S.DELIVERY_STATUS_DELIVERED, S.DELIVERY_STATUS_READ]
    assert (delivered.delivery, delivered.ticket_id) == (d1.name, ticket)
    assert list(ok.provider_message_ids) == list(d1.provider_message_ids)
    assert ok.delivery == d1.name
    kinds = [type(e).__name__ for e in found[d2.request_id]]
    assert kinds == ["ReplyDelivered", "DeliveryFailed"]
    [bad] = found[d3.request_id]
    assert isinstance(bad, delivery_events_pb2.DeliveryFailed)
    assert bad.permanent
    assert bad.provider_error_code == "21211"
    assert bad.attempts == 1
    assert "not a valid phone number" in bad.reason


async def test_broker_down_delays_outcomes_but_loses_none(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")  # not started yet: the broker is down
    n = await start_notifier(
        **provider_env(None, fake_twilio),
        kafka_enabled=True,
        kafka_bootstrap=broker.bootstrap,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
    )
    ticket = f"T-{uuid.uuid4().hex[:8]}"
    sent = [await n.stub.SendMessage(whatsapp_request(f"Reply {i}.", ticket_id=ticket)) for i in range(3)]
    for resp in sent:
        assert (await wait_final(n.stub, resp.delivery.name)).status == S.DELIVERY_STATUS_SENT
    assert len(fake_twilio.messages()) == 3

    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, topics.ALL)
        consumer = AIOKafkaConsumer(
            topics.DELIVERY_OUTCOMES, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        names: list[str] = []
        try:
            async with asyncio.timeout(60):
                while len(names) < 3:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        for record in records:
                            event = envelope.decode(record.value, record.headers, OUTCOMES)
                            names.append(event.message.delivery)  # type: ignore[attr-defined]
        finally:
            await consumer.stop()
        assert sorted(names) == sorted(r.delivery.name for r in sent)
    finally:
        await n.close()  # before the broker goes away
        await broker.stop()
