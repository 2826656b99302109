"""The transactional outbox relay every service uses.

A service writes each event into its outbox table in the same transaction as the change it
announces; the relay publishes pending rows to Kafka afterwards. If Kafka is down, events wait
in the table and go out once it is back: nothing is lost, nothing is published for a change that
rolled back. One replica relays at a time (an advisory lock), so events leave in the order they
were written, each with the correlation id and the trace context (`trace_context`) of the request
that wrote it, so the relayed publish continues that request's trace. Delivery is at least
once: a retry re-sends the same `ce_id`, and consumers drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from fte_runtime import tracing
from fte_runtime.backoff import Backoff
from fte_runtime.context import current_correlation_id
from fte_runtime.kafka import EventPublisher, start_producer
from fte_runtime.settings import KafkaSettings

log = logging.getLogger("fte.outbox")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class OutboxTable:
    """Where a service keeps its outbox. Every outbox table has the columns `topic`,
    `record_key`, `event_type`, `payload` (the serialized event), `correlation_id`,
    `trace_context` (jsonb: the W3C fields) and `attempts`; these name the rest."""

    table: str
    # The CloudEvents id of the row's event.
    event_id: str
    # Write order.
    position: str
    # NULL while pending.
    published: str

    def __post_init__(self) -> None:
        for name in (self.table, self.event_id, self.position, self.published):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not an SQL identifier: {name!r}")

    @property
    def lock(self) -> str:
        return f"fte-outbox-relay:{self.table}"


async def enqueue(
    conn: Any, table: OutboxTable, topic: str, key: str, message: Message, *, correlation_id: str | None = None
) -> None:
    """Add an event to the outbox, with `correlation_id` (default: the current one) and the
    current trace context; call inside the transaction that makes the change it announces."""
    trace_context = tracing.carrier()
    await conn.execute(
        f"""INSERT INTO {table.table} ({table.event_id}, topic, record_key, event_type, payload, correlation_id,
                                       trace_context)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",  # noqa: S608 - identifiers checked by OutboxTable
        uuid.uuid4(),
        topic,
        key,
        message.DESCRIPTOR.full_name,
        message.SerializeToString(),
        correlation_id or current_correlation_id(),
        None if trace_context is None else json.dumps(trace_context),
    )


@dataclass(frozen=True, slots=True)
class PendingEvent:
    position: int
    event_id: str
    topic: str
    key: str
    event_type: str  # the message's full name, the record's ce_type
    payload: bytes  # the serialized message, sent as stored
    correlation_id: str | None
    trace_context: dict[str, str] | None = None


class OutboxRelay:
    """Publishes pending outbox rows. `wake()` after a commit makes it look at once."""

    def __init__(
        self,
        pool: Any,
        kafka: KafkaSettings,
        table: OutboxTable,
        *,
        source: str,
        client_id: str,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._kafka = kafka
        self._table = table
        self._source = source
        self._client_id = client_id
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        # Identifiers only, checked by OutboxTable; the values are query parameters.
        t = table
        self._select = f"""SELECT {t.position} AS position, {t.event_id}::text AS event_id, topic, record_key,
                                  event_type, payload, correlation_id, trace_context::text AS trace_context
                           FROM {t.table} WHERE {t.published} IS NULL ORDER BY {t.position} LIMIT $1"""  # noqa: S608
        self._mark = f"UPDATE {t.table} SET {t.published} = now() WHERE {t.position} = ANY($1::bigint[])"  # noqa: S608
        self._failed = f"UPDATE {t.table} SET attempts = attempts + 1 WHERE {t.position} = $1"  # noqa: S608

    def wake(self) -> None:
        self._wakeup.set()

    async def _publisher(self) -> EventPublisher:
        if self._producer is None:
            self._producer = await start_producer(self._kafka, self._client_id)
        return EventPublisher(self._producer, self._source)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    def _event(self, row: Any) -> PendingEvent:
        return PendingEvent(
            position=row["position"],
            event_id=row["event_id"],
            topic=row["topic"],
            key=row["record_key"],
            event_type=row["event_type"],
            payload=bytes(row["payload"]),
            correlation_id=row["correlation_id"],
            trace_context=json.loads(row["trace_context"]) if row["trace_context"] else None,
        )

    async def publish_pending(self) -> int:
        """Publish one batch in order; how many went out. Raises when Kafka fails, after
        recording what was published before the failure."""
        publisher = await self._publisher()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", self._table.lock):
                return 0
            events = [self._event(row) for row in await conn.fetch(self._select, self._batch_size)]
            if not events:
                return 0
            # Queued in order, acknowledged together: one round trip for the batch. Events after
            # a failed one may have gone out too; they are sent again (same ce_id) after it.
            sends: list[asyncio.Future[Any]] = []
            failure: BaseException | None = None
            for e in events:
                try:
                    sends.append(
                        await publisher.send_serialized(
                            e.topic,
                            e.payload,
                            e.event_type,
                            key=e.key,
                            event_id=e.event_id,
                            correlation_id=e.correlation_id,
                            trace_context=e.trace_context,
                        )
                    )
                except Exception as exc:
                    failure = exc
                    break
            published: list[int] = []
            for event, outcome in zip(events, await asyncio.gather(*sends, return_exceptions=True), strict=False):
                if isinstance(outcome, BaseException):
                    failure = outcome
                    break
                published.append(event.position)
            if failure is not None:
                await conn.execute(self._failed, events[len(published)].position)
            if published:
                await conn.execute(self._mark, published)
        if failure is not None:
            raise failure
        return len(published)

    async def run(self) -> None:
        """Relay until cancelled; Kafka failures are retried with back-off, never dropped."""
        backoff = Backoff(0.2, 5.0)
        try:
            while True:
                # Cleared before reading, so a wake-up during the batch is not lost.
                self._wakeup.clear()
                try:
                    sent = await self.publish_pending()
                    backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "outbox relay failed; retrying", extra={"table": self._table.table, "error": type(exc).__name__}
                    )
                    await self.close()
                    await backoff.wait()
                    continue
                if sent >= self._batch_size:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
        finally:
            await self.close()
