"""Producer, consumer loop and dead-lettering against the real broker (Tansu, or Apache Kafka
under `make test-kafka`)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte_runtime import envelope
from fte_runtime.kafka import EventPublisher, PoisonRecord, ensure_topics, make_consumer, make_producer, run_consumer
from fte_runtime.settings import KafkaSettings
from fte_runtime.topics import dead_letter_topic

pytestmark = pytest.mark.kafka

TYPES = envelope.type_map(message_events_pb2.MessageReceived)


def message(n: int) -> message_events_pb2.MessageReceived:
    return message_events_pb2.MessageReceived(channel=common_pb2.CHANNEL_WEB_FORM, channel_message_id=f"m{n}")


async def drain(consumer: AIOKafkaConsumer, want: int, timeout: float = 20) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(timeout):
        while len(records) < want:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
    return records


async def test_poison_goes_to_dlq_and_the_partition_moves_on(kafka_settings: KafkaSettings) -> None:
    topic = f"test.runtime.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_settings.kafka_bootstrap, [topic], partitions=1)
    producer = make_producer(kafka_settings, "test")
    await producer.start()
    try:
        publisher = EventPublisher(producer, "/test")
        await publisher.publish(topic, message(1), key="k")
        await producer.send_and_wait(topic, value=b"not an event", key=b"k")  # no CloudEvents headers
        await publisher.publish(topic, message(2), key="k")
        await publisher.publish(topic, message(3), key="k")  # rejected by the handler as invalid

        handled: list[str] = []
        two_handled = asyncio.Event()
        failures = {"m2": 2}  # a transient failure twice, then success: retried, never skipped

        async def handler(record: ConsumerRecord) -> None:
            event = envelope.decode(record.value, record.headers, TYPES)
            mid = event.message.channel_message_id  # type: ignore[attr-defined]
            if mid == "m3":
                raise PoisonRecord("channel_message_id m3 is not allowed")
            if failures.get(mid, 0) > 0:
                failures[mid] -= 1
                raise ConnectionError("database restarting")
            handled.append(mid)
            if len(handled) == 2:
                two_handled.set()

        group = f"g-{uuid.uuid4().hex[:6]}"
        consumer = make_consumer(kafka_settings, group, topic)
        await consumer.start()
        stopping = asyncio.Event()
        task = asyncio.create_task(run_consumer(consumer, handler, producer, stopping))
        try:
            await asyncio.wait_for(two_handled.wait(), 30)
        finally:
            stopping.set()
            await task
            await consumer.stop()
        assert handled == ["m1", "m2"]

        dlq = AIOKafkaConsumer(
            dead_letter_topic(topic), bootstrap_servers=kafka_settings.kafka_bootstrap, auto_offset_reset="earliest"
        )
        await dlq.start()
        try:
            dead = await drain(dlq, 2)
        finally:
            await dlq.stop()
        errors = [dict(r.headers)["dlq_error"].decode() for r in dead]
        assert "not a CloudEvent" in errors[0]
        assert "m3 is not allowed" in errors[1]
        assert dead[0].value == b"not an event"
        assert dict(dead[1].headers)["ce_type"] == b"fte.events.v1.MessageReceived"

        # Offsets were committed: a new consumer of the group starts after the last record.
        again = make_consumer(kafka_settings, group, topic)
        await again.start()
        try:
            batch = await again.getmany(timeout_ms=3000)
            assert sum(len(v) for v in batch.values()) == 0
        finally:
            await again.stop()
    finally:
        await producer.stop()
