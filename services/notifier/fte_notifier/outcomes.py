"""Relays outcome events (ReplyDelivered, DeliveryFailed) from the outbox table to Kafka.

At least once: rows are marked published only after the broker acknowledged them; a crash in
between publishes them again with the same CloudEvents id (the row id), so consumers can drop
the repeat by `ce_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from fte.events.v1 import delivery_events_pb2
from fte_runtime.envelope import type_map
from fte_runtime.kafka import EventPublisher

log = logging.getLogger("fte.notifier.outcomes")

OUTCOME_TYPES = type_map(delivery_events_pb2.ReplyDelivered, delivery_events_pb2.DeliveryFailed)


class OutcomeRelay:
    def __init__(self, pool: asyncpg.Pool, publisher: EventPublisher, poll_seconds: float = 0.5) -> None:
        self.pool = pool
        self.publisher = publisher
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self, limit: int = 500) -> int:
        """Publish one batch of pending events; the number published."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, topic, record_key, event_type, payload FROM outcome_events
                   WHERE published_time IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED""",
                limit,
            )
            if not rows:
                return 0
            await asyncio.gather(
                *(
                    self.publisher.publish(
                        row["topic"],
                        OUTCOME_TYPES[row["event_type"]].FromString(row["payload"]),
                        key=row["record_key"],
                        event_id=str(row["id"]),
                    )
                    for row in rows
                )
            )
            await conn.execute(
                "UPDATE outcome_events SET published_time = now() WHERE id = ANY($1::uuid[])", [r["id"] for r in rows]
            )
        return len(rows)

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                if await self.relay_once():
                    delay = 0.2
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outcome relay failed; retrying", extra={"error": type(exc).__name__, "in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
