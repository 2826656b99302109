"""Kafka producers and consumers on aiokafka, with manual commits and dead-lettering.

The consumer loop processes each partition's records in order and commits a partition's
offset only after its records' effects are stored. What a failing record gets is one
`RetryPolicy` for every consumer: a record the handler rejects as poison goes to `<topic>.dlq`
with the error in its headers, so one bad record never blocks the partition; a transient failure
(a dependency down) is retried with back-off without limit; any other failure is retried up to
`max_attempts` times and then dead-lettered. A failed dead-letter send is retried too: it never
escapes the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message
from prometheus_client import Counter

from fte_runtime import envelope, tracing
from fte_runtime.backoff import Backoff
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


async def start_producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """A started producer; one that fails to start is stopped again, so nothing leaks."""
    producer = make_producer(settings, client_id)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


def make_consumer(
    settings: KafkaSettings, group_id: str, *topics: str, offset_reset: str = "earliest"
) -> AIOKafkaConsumer:
    """A consumer committing by hand. A new group starts at the oldest record (`earliest`, for
    work queues) or, for a live view that shows only what happens from now on, at `latest`."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=settings.kafka_client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=offset_reset,
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
        self,
        topic: str,
        message: Message,
        *,
        key: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> RecordMetadata:
        """Publish and wait for the broker's acknowledgement. The record carries the trace
        context of `trace_context` (a stored carrier, see `tracing.carrier`) or of the current span."""
        with tracing.producer_span(topic, trace_context) as trace_headers:
            value, headers = envelope.encode(
                message, source=self.source, event_id=event_id, correlation_id=correlation_id
            )
            meta: RecordMetadata = await self.producer.send_and_wait(
                topic, value=value, key=key.encode(), headers=headers + trace_headers
            )
        self._count(topic)
        return meta

    async def send(
        self,
        topic: str,
        message: Message,
        *,
        key: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue the event; the returned future resolves when the broker acknowledged it.
        Events queued one after another keep their order within a partition."""
        return await self.send_serialized(
            topic,
            message.SerializeToString(),
            message.DESCRIPTOR.full_name,
            key=key,
            event_id=event_id,
            correlation_id=correlation_id,
            trace_context=trace_context,
        )

    async def send_serialized(
        self,
        topic: str,
        payload: bytes,
        event_type: str,
        *,
        key: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """`send` for an event already serialized (an outbox row): sent as stored, never parsed, so
        a relay also carries event types newer than its own code."""
        with tracing.producer_span(topic, trace_context) as trace_headers:
            headers = envelope.headers(event_type, source=self.source, event_id=event_id, correlation_id=correlation_id)
            sent: asyncio.Future[RecordMetadata] = await self.producer.send(
                topic, value=payload, key=key.encode(), headers=headers + trace_headers
            )
        sent.add_done_callback(lambda f: None if f.cancelled() or f.exception() else self._count(topic))
        return sent

    def _count(self, topic: str) -> None:
        produced = self._produced.get(topic)
        if produced is None:
            produced = self._produced[topic] = KAFKA_PRODUCED.labels(topic)
        produced.inc()


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


async def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int = 3, *, dead_letters: bool = True
) -> None:
    """Create topics (and their DLQs, unless `dead_letters` is false) that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for topic in topics:
            for name in (topic, dead_letter_topic(topic)) if dead_letters else (topic,):
                if name not in existing:
                    wanted.append(NewTopic(name, num_partitions=partitions, replication_factor=1))
        for new in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new])
    finally:
        await admin.close()


Handler = Callable[[ConsumerRecord], Awaitable[object]]

_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def is_transient(exc: BaseException) -> bool:
    """Failures that go away by themselves (a dependency down, busy or racing): retried without
    limit, never dead-lettered."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_CODES
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | KafkaError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.UniqueViolationError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.SerializationError
        | asyncpg.exceptions.TooManyConnectionsError,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """What a consumer does with a record whose handler fails: poison (`PoisonRecord`,
    `envelope.InvalidEvent`) is dead-lettered at once; a `transient` failure is retried without
    limit; any other failure is retried until it failed `max_attempts` times, then dead-lettered.
    Waits between tries double from `initial_delay` up to `max_delay`."""

    max_attempts: int = 5
    transient: Callable[[BaseException], bool] = is_transient
    initial_delay: float = 0.1
    max_delay: float = 5.0

    def backoff(self) -> Backoff:
        return Backoff(self.initial_delay, self.max_delay)


async def dead_letter_until_sent(
    producer: AIOKafkaProducer | None, record: ConsumerRecord, error: str, stopping: asyncio.Event, policy: RetryPolicy
) -> bool:
    """Dead-letter the record, retrying a failed send with back-off; False when stopping came
    first (the record stays uncommitted and is handled again after a restart).

    Without a producer (a watcher, such as a live view, with one group per process: each process
    dead-lettering the same record would copy it once per process) the record is logged and skipped."""
    if producer is None:
        KAFKA_CONSUMED.labels(record.topic, "skipped").inc()
        log.warning("record skipped", extra={"topic": record.topic, "offset": record.offset, "error": error[:500]})
        return True
    backoff = policy.backoff()
    while True:
        try:
            await dead_letter(producer, record, error)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dead-lettering failed; retrying", extra={"topic": record.topic, "offset": record.offset})
        if not await backoff.wait(stopping):
            return False


async def handle_with_retry(
    record: ConsumerRecord,
    handler: Handler,
    producer: AIOKafkaProducer | None,
    stopping: asyncio.Event,
    policy: RetryPolicy,
) -> bool:
    """Process one record under `policy`: True when done (handled or dead-lettered), False when
    stopping came first. With tracing on, one span covers every try, child of the span that
    published the record."""
    with tracing.consumer_span(record.topic, record.headers, {"messaging.kafka.offset": record.offset}):
        return await _handle_with_retry(record, handler, producer, stopping, policy)


async def _handle_with_retry(
    record: ConsumerRecord,
    handler: Handler,
    producer: AIOKafkaProducer | None,
    stopping: asyncio.Event,
    policy: RetryPolicy,
) -> bool:
    attempts = 0
    backoff = policy.backoff()
    while True:
        try:
            await handler(record)
            KAFKA_CONSUMED.labels(record.topic, "ok").inc()
            return True
        except (PoisonRecord, envelope.InvalidEvent) as exc:
            return await dead_letter_until_sent(producer, record, f"{type(exc).__name__}: {exc}", stopping, policy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            KAFKA_CONSUMED.labels(record.topic, "retried").inc()
            where = {"topic": record.topic, "offset": record.offset}
            if policy.transient(exc):
                log.warning("transient failure; retrying", extra={**where, "error": repr(exc)[:300]})
            else:
                attempts += 1
                log.exception("handling failed", extra={**where, "attempt": attempts})
                if attempts >= policy.max_attempts:
                    error = f"failed {attempts} times: {type(exc).__name__}: {exc}"
                    return await dead_letter_until_sent(producer, record, error, stopping, policy)
        if stopping.is_set() or not await backoff.wait(stopping):
            return False


async def run_consumer(
    consumer: AIOKafkaConsumer,
    handler: Handler,
    producer: AIOKafkaProducer | None,
    stopping: asyncio.Event,
    *,
    retry: RetryPolicy = RetryPolicy(),
    batch_size: int = 200,
) -> None:
    """Consume until `stopping` is set. Partitions run concurrently; records within a partition
    run in order; a partition's offset is committed after its records are processed."""

    async def one_partition(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        last: ConsumerRecord | None = None
        for record in records:
            if not await handle_with_retry(record, handler, producer, stopping, retry):
                break
            last = record
        if last is not None:
            await consumer.commit({tp: last.offset + 1})

    while not stopping.is_set():
        batches = await consumer.getmany(timeout_ms=200, max_records=batch_size)
        if batches:
            await asyncio.gather(*(one_partition(tp, recs) for tp, recs in batches.items()))


async def consume(
    consumer: AIOKafkaConsumer,
    handler: Handler,
    producer: AIOKafkaProducer | None,
    stopping: asyncio.Event,
    *,
    retry: RetryPolicy = RetryPolicy(),
) -> None:
    """Start `consumer`, run it until `stopping` is set, and stop it (also when it fails to start)."""
    try:
        await consumer.start()
        await run_consumer(consumer, handler, producer, stopping, retry=retry)
    finally:
        await consumer.stop()
