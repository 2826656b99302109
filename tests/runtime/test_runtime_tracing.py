"""The W3C trace context survives the Kafka hop (CloudEvents `ce_traceparent` headers, set on
produce, continued on consume) and the outbox (stored with the row, continued by the relay that
publishes it later, outside any request), over the real broker and PostgreSQL. Spans go to an
in-memory exporter of the real SDK."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte_runtime import envelope, outbox, tracing
from fte_runtime.kafka import (
    EventPublisher,
    RetryPolicy,
    ensure_topics,
    handle_with_retry,
    make_consumer,
    make_producer,
)
from fte_runtime.logs import JsonFormatter
from fte_runtime.settings import KafkaSettings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.runtime.test_runtime_kafka import drain
from tests.runtime.test_runtime_outbox import TABLE, create_outbox

pytestmark = pytest.mark.kafka

TYPES = envelope.type_map(message_events_pb2.MessageReceived)
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, as `configure_tracing` leaves it, for this test only."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(PROVIDER)
    monkeypatch.setattr(tracing, "_provider", trace.get_tracer_provider())
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def message(mid: str) -> message_events_pb2.MessageReceived:
    return message_events_pb2.MessageReceived(channel=common_pb2.CHANNEL_WHATSAPP, channel_message_id=mid)


def trace_id_of(record: ConsumerRecord) -> str:
    traceparent = str(dict(record.headers)[tracing.TRACEPARENT_HEADER].decode())
    version, trace_id, _span_id, _flags = traceparent.split("-")
    assert version == "00"
    return trace_id


async def consume_one(kafka: KafkaSettings, topic: str) -> ConsumerRecord:
    consumer = make_consumer(kafka, f"g-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    try:
        [record] = await drain(consumer, 1)
    finally:
        await consumer.stop()
    return record


async def handled_in(record: ConsumerRecord) -> tuple[str | None, list[str]]:
    """Run the runtime's consumer path on `record`: the trace id the handler ran in, and the
    log line it wrote (JSON)."""
    seen: list[str | None] = []
    lines: list[str] = []
    formatter = JsonFormatter("test")

    async def handler(rec: ConsumerRecord) -> None:
        ids = tracing.current_ids()
        seen.append(ids[0] if ids else None)
        lines.append(formatter.format(logging.LogRecord("t", logging.INFO, __file__, 1, "handled", None, None)))

    assert await handle_with_retry(record, handler, None, asyncio.Event(), RetryPolicy())
    return seen[0], lines


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


async def test_traceparent_survives_the_kafka_headers(
    kafka_settings: KafkaSettings, traced: InMemorySpanExporter
) -> None:
    topic = f"test.trace.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_settings.kafka_bootstrap, [topic], partitions=1)
    producer = make_producer(kafka_settings, "test")
    await producer.start()
    try:
        with tracing.tracer.start_as_current_span("webhook") as root:
            await EventPublisher(producer, "test.fte").publish(topic, message("m1"), key="k")
    finally:
        await producer.stop()
    want = format(root.get_span_context().trace_id, "032x")

    record = await consume_one(kafka_settings, topic)
    assert trace_id_of(record) == want
    # Still a well-formed CloudEvent: the extension headers do not disturb decoding.
    assert envelope.decode(record.value, record.headers, TYPES).message == message("m1")

    handled_trace, lines = await handled_in(record)
    assert handled_trace == want
    assert f'"trace_id": "{want}"' in lines[0]

    spans = traced.get_finished_spans()
    [produce] = by_kind(spans, SpanKind.PRODUCER)
    [consume] = by_kind(spans, SpanKind.CONSUMER)
    assert produce.name == f"publish {topic}"
    assert produce.parent is not None
    assert produce.parent.span_id == root.get_span_context().span_id
    # The consumer span continues the producer's: one trace across the broker hop.
    assert consume.parent is not None
    assert consume.parent.span_id == produce.context.span_id
    assert consume.context.trace_id == root.get_span_context().trace_id


async def test_traceparent_survives_the_outbox(
    kafka_settings: KafkaSettings, new_database: Callable[[], Awaitable[str]], traced: InMemorySpanExporter
) -> None:
    dsn = await new_database()
    conn = await asyncpg.connect(dsn)
    try:
        await create_outbox(conn)
        topic = f"test.trace.{uuid.uuid4().hex[:8]}"
        await ensure_topics(kafka_settings.kafka_bootstrap, [topic], partitions=1)
        # The request that writes the row; the relay runs later, in no span at all.
        with tracing.tracer.start_as_current_span("SendMessage") as request:
            async with conn.transaction():
                await outbox.enqueue(conn, TABLE, topic, "k", message("m2"))
        stored = await conn.fetchval("SELECT trace_context->>'traceparent' FROM outbox")
    finally:
        await conn.close()
    want = format(request.get_span_context().trace_id, "032x")
    assert stored.split("-")[1] == want

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    relay = outbox.OutboxRelay(pool, kafka_settings, TABLE, source="test.fte", client_id="test-relay", poll_seconds=0.1)
    try:
        assert trace.get_current_span().get_span_context().is_valid is False
        assert await relay.publish_pending() == 1
    finally:
        await relay.close()
        await pool.close()

    record = await consume_one(kafka_settings, topic)
    assert trace_id_of(record) == want
    handled_trace, _ = await handled_in(record)
    assert handled_trace == want
    [produce] = by_kind(traced.get_finished_spans(), SpanKind.PRODUCER)
    assert produce.parent is not None
    assert produce.parent.span_id == request.get_span_context().span_id


async def test_off_means_no_headers_and_nothing_stored() -> None:
    assert not tracing.enabled()
    assert tracing.carrier() is None
    with tracing.producer_span("t") as headers:
        assert headers == []
    value, headers = envelope.encode(message("m3"), source="test.fte")
    assert tracing.TRACEPARENT_HEADER not in dict(headers)
    assert value
