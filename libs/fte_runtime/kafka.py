"""Kafka producers and consumers on aiokafka, with manual commits and dead-lettering.

The consumer loop processes each partition's records in order and commits a partition's
offset only after its records' effects are stored. A record the handler rejects as poison goes
to `<topic>.dlq` with the error in its headers, so one bad record never blocks the partition;
any other failure is retried with backoff and never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from prometheus_client import Counter

from fte_runtime import envelope
from fte_runtime.metrics import KAFKA_CONSUMED, KAFKA_PRODUCED
from fte_runtime.settings import KafkaSettings
from fte_runtime.topics import dead_letter_topic

log = logging.getLogger("fte.kafka")

MAX_MESSAGE_BYTES = 2 * 1024 * 1024


class PoisonRecord(Exception):
    """Raised by a handler for a record that can never be processed (undecodable, invalid)."""


def make_producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        linger_ms=2,
        max_request_size=MAX_MESSAGE_BYTES,
        request_timeout_ms=10_000,
    )


def make_consumer(settings: KafkaSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=settings.kafka_client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_wait_ms=100,
    )


class EventPublisher:
    """Publishes protobuf events as CloudEvents records; waits for acks=all."""

    def __init__(self, producer: AIOKafkaProducer, source: str) -> None:
        self.producer = producer
        self.source = source
        # Per-topic counter children: a label lookup takes a lock and a tuple each time.
        self._produced: dict[str, Counter] = {}

    async def publish(
        self, topic: str, message: Message, *, key: str, event_id: str | None = None, correlation_id: str | None = None
    ) -> RecordMetadata:
        value, headers = envelope.encode(message, source=self.source, event_id=event_id, correlation_id=correlation_id)
        meta: RecordMetadata = await self.producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)
        produced = self._produced.get(topic)
        if produced is None:
            produced = self._produced[topic] = KAFKA_PRODUCED.labels(topic)
        produced.inc()
        return meta


async def dead_letter(producer: AIOKafkaProducer, record: ConsumerRecord, error: str) -> None:
    """Copy a record to its topic's DLQ with where it came from and why it failed."""
    headers = [
        *(record.headers or ()),
        ("dlq_error", error[:2000].encode()),
        ("dlq_topic", record.topic.encode()),
        ("dlq_partition", str(record.partition).encode()),
        ("dlq_offset", str(record.offset).encode()),
        ("dlq_time", datetime.now(UTC).isoformat().encode()),
    ]
    await producer.send_and_wait(dead_letter_topic(record.topic), value=record.value, key=record.key, headers=headers)
    KAFKA_CONSUMED.labels(record.topic, "dead_lettered").inc()
    log.warning("record dead-lettered", extra={"topic": record.topic, "offset": record.offset, "error": error[:500]})


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 3) -> None:
    """Create topics (and their DLQs) that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for topic in topics:
            for name in (topic, dead_letter_topic(topic)):
                if name not in existing:
                    wanted.append(NewTopic(name, num_partitions=partitions, replication_factor=1))
        for new in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new])
    finally:
        await admin.close()


Handler = Callable[[ConsumerRecord], Awaitable[None]]


async def _handle_with_retry(
    record: ConsumerRecord, handler: Handler, producer: AIOKafkaProducer, stopping: asyncio.Event
) -> bool:
    """Process one record; True when done (handled or dead-lettered), False when stopping."""
    delay = 0.1
    while True:
        try:
            await handler(record)
            KAFKA_CONSUMED.labels(record.topic, "ok").inc()
            return True
        except (PoisonRecord, envelope.InvalidEvent) as exc:
            await dead_letter(producer, record, f"{type(exc).__name__}: {exc}")
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            KAFKA_CONSUMED.labels(record.topic, "retried").inc()
            log.exception("handler failed; retrying", extra={"topic": record.topic, "offset": record.offset})
            if stopping.is_set():
                return False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)


async def run_consumer(
    consumer: AIOKafkaConsumer,
    handler: Handler,
    producer: AIOKafkaProducer,
    stopping: asyncio.Event,
    *,
    batch_size: int = 200,
) -> None:
    """Consume until `stopping` is set. Partitions run concurrently; records within a partition
    run in order; a partition's offset is committed after its records are processed."""

    async def one_partition(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        last: ConsumerRecord | None = None
        for record in records:
            if not await _handle_with_retry(record, handler, producer, stopping):
                break
            last = record
        if last is not None:
            await consumer.commit({tp: last.offset + 1})

    while not stopping.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=batch_size)
        if batches:
            await asyncio.gather(*(one_partition(tp, recs) for tp, recs in batches.items()))
