"""The outbox relay over the real PostgreSQL and broker: rows go out in write order, as stored.

The relay never parses a payload: during a rolling deploy that adds an event type, a replica of
the older code may hold the relay's lock, and it must still publish the newer rows."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte_runtime import envelope, outbox
from fte_runtime.kafka import ensure_topics, make_consumer
from fte_runtime.settings import KafkaSettings

from tests.runtime.test_runtime_kafka import drain

pytestmark = pytest.mark.kafka

TABLE = outbox.OutboxTable("outbox", event_id="event_id", position="id", published="publish_time")


async def create_outbox(conn: Any) -> None:
    """An outbox table with the columns every service's outbox has."""
    await conn.execute(
        """CREATE TABLE outbox (
               id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id uuid NOT NULL,
               topic text NOT NULL, record_key text NOT NULL, event_type text NOT NULL, payload bytea NOT NULL,
               correlation_id text, trace_context jsonb, attempts integer NOT NULL DEFAULT 0,
               publish_time timestamptz)"""
    )


async def test_rows_go_out_in_order_as_stored_whatever_their_type(
    kafka_settings: KafkaSettings, new_database: Callable[[], Awaitable[str]]
) -> None:
    dsn = await new_database()
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_settings.kafka_bootstrap, [topic], partitions=1)
    known = message_events_pb2.MessageReceived(channel=common_pb2.CHANNEL_WHATSAPP, channel_message_id="m1")
    newer_type, newer_payload, newer_id = "fte.events.v9.NotYetKnown", b"\x0a\x03abc\xff", uuid.uuid4()
    conn = await asyncpg.connect(dsn)
    try:
        await create_outbox(conn)
        async with conn.transaction():
            await outbox.enqueue(conn, TABLE, topic, "k", known, correlation_id="corr-1")
        # What a replica of newer code wrote: a type this code has no class for.
        await conn.execute(
            """INSERT INTO outbox (event_id, topic, record_key, event_type, payload, correlation_id)
               VALUES ($1, $2, 'k', $3, $4, 'corr-2')""",
            newer_id,
            topic,
            newer_type,
            newer_payload,
        )
        async with conn.transaction():
            await outbox.enqueue(conn, TABLE, topic, "k", known, correlation_id="corr-3")
        stored = [str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM outbox ORDER BY id")]
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    relay = outbox.OutboxRelay(pool, kafka_settings, TABLE, source="test.fte", client_id="test-relay")
    try:
        assert await relay.publish_pending() == 3
        assert await relay.publish_pending() == 0  # all marked published
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE publish_time IS NULL") == 0
    finally:
        await relay.close()
        await pool.close()

    consumer = make_consumer(kafka_settings, f"g-{uuid.uuid4().hex[:6]}", topic)
    await consumer.start()
    try:
        records = await drain(consumer, 3)
    finally:
        await consumer.stop()
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    assert [h["ce_id"] for h in headers] == stored
    assert [h[envelope.CORRELATION_ATTRIBUTE] for h in headers] == ["corr-1", "corr-2", "corr-3"]
    assert [h["ce_type"] for h in headers] == [known.DESCRIPTOR.full_name, newer_type, known.DESCRIPTOR.full_name]
    assert records[1].value == newer_payload
    assert all(h["ce_source"] == "test.fte" for h in headers)
    decoded = envelope.decode(records[0].value, records[0].headers, envelope.type_map(type(known)))
    assert decoded.message == known
