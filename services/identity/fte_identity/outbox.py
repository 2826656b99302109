"""The transactional outbox: events are written in the same transaction as the change they
announce, and a relay publishes them to Kafka afterwards. If Kafka is down, events wait in the
table and go out, in order, once it is back; nothing is lost and nothing is published for a change
that rolled back. Delivery is at least once: a retry re-sends the same `ce_id`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from fte.events.v1 import customer_events_pb2
from fte_runtime import envelope
from fte_runtime.context import current_correlation_id
from fte_runtime.kafka import EventPublisher, make_producer
from fte_runtime.settings import KafkaSettings
from google.protobuf.message import Message

log = logging.getLogger("fte.identity.outbox")

EVENT_TYPES = envelope.type_map(customer_events_pb2.CustomerErased, customer_events_pb2.CustomersMerged)
# Only one replica relays at a time, so events leave in the order they were written.
_RELAY_LOCK = "fte-identity-outbox-relay"


async def enqueue(conn: Any, topic: str, key: str, message: Message) -> None:
    """Add an event to the outbox; call inside the transaction that makes the change."""
    await conn.execute(
        """INSERT INTO outbox (topic, record_key, event_id, event_type, payload, correlation_id)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        topic,
        key,
        uuid.uuid4(),
        message.DESCRIPTOR.full_name,
        message.SerializeToString(),
        current_correlation_id(),
    )


class OutboxRelay:
    """Publishes pending outbox rows. `wake()` after a commit makes it look at once."""

    def __init__(
        self,
        pool: Any,
        kafka: KafkaSettings,
        *,
        source: str,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._source = source
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def _publisher(self) -> EventPublisher:
        if self._producer is None:
            producer = make_producer(self._kafka, client_id="fte-identity-outbox")
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return EventPublisher(self._producer, self._source)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish_pending(self) -> int:
        """Publish one batch in order; returns how many went out. Raises when Kafka fails,
        after recording what was published before the failure."""
        publisher = await self._publisher()
        published: list[int] = []
        failure: BaseException | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", _RELAY_LOCK):
                return 0
            rows = await conn.fetch(
                """SELECT id, topic, record_key, event_id, event_type, payload, correlation_id
                   FROM outbox WHERE publish_time IS NULL ORDER BY id LIMIT $1""",
                self._batch_size,
            )
            for row in rows:
                message = EVENT_TYPES[row["event_type"]]()
                message.ParseFromString(row["payload"])
                try:
                    await publisher.publish(
                        row["topic"],
                        message,
                        key=row["record_key"],
                        event_id=str(row["event_id"]),
                        correlation_id=row["correlation_id"],
                    )
                except Exception as exc:
                    failure = exc
                    break
                published.append(row["id"])
            if published:
                await conn.execute("UPDATE outbox SET publish_time = now() WHERE id = ANY($1::bigint[])", published)
            if failure is not None:
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1 WHERE id = $1", rows[len(published)]["id"]
                )
        if failure is not None:
            raise failure
        return len(published)

    async def run(self) -> None:
        """Relay until cancelled; Kafka failures are retried with backoff, never dropped."""
        delay = 0.2
        try:
            while True:
                # Cleared before reading, so a wake-up during the batch is not lost.
                self._wakeup.clear()
                try:
                    sent = await self.publish_pending()
                    delay = 0.2
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("outbox relay failed; retrying", extra={"error": type(exc).__name__})
                    await self.close()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if sent >= self._batch_size:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
        finally:
            await self.close()
