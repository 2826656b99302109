"""The gateway's Kafka producer: started in the background (the gateway comes up, not ready, while
the broker is down), and a publish that waits for acks=all or fails fast so the caller answers 503."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fte_runtime import envelope
from fte_runtime.backoff import Backoff
from fte_runtime.kafka import EventPublisher, start_producer

from fte_gateway.events import Outgoing
from fte_gateway.settings import GatewaySettings

log = logging.getLogger("fte.gateway.kafka")

SOURCE = envelope.service_source("gateway")
READY_CACHE_SECONDS = 1.0


class KafkaUnavailable(Exception):
    """Nothing was acknowledged: the request must fail so the sender retries."""


class Publisher:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._publisher: EventPublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready_at = 0.0
        self._ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="kafka-connect")

    async def _connect(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                producer = await start_producer(self._settings, "fte-gateway")
            except (KafkaError, OSError) as exc:
                log.warning("kafka not reachable yet", extra={"error": type(exc).__name__})
                await backoff.wait()
                continue
            self._producer = producer
            self._publisher = EventPublisher(producer, SOURCE)
            log.info("kafka producer started")
            return

    async def connected(self) -> None:
        """Wait until the producer has started."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
            self._publisher = None

    async def ready(self) -> bool:
        """Connected to the broker: metadata refreshed within the last second or just now."""
        if self._producer is None:
            return False
        now = time.monotonic()
        if now - self._ready_at < READY_CACHE_SECONDS:
            return self._ready
        try:
            self._ready = bool(await asyncio.wait_for(self._producer.client.force_metadata_update(), 2.0))
        except (TimeoutError, KafkaError, OSError):
            self._ready = False
        self._ready_at = time.monotonic()
        return self._ready

    async def publish(self, events: Sequence[Outgoing], correlation_id: str) -> None:
        """All of `events` acknowledged by the broker, or KafkaUnavailable."""
        publisher = self._publisher
        if publisher is None:
            raise KafkaUnavailable("producer not connected")
        try:
            async with asyncio.timeout(self._settings.publish_timeout_seconds):
                # In order: events of one customer keep their order on the partition.
                for e in events:
                    await publisher.publish(
                        e.topic, e.message, key=e.key, event_id=e.event_id, correlation_id=correlation_id
                    )
        except (TimeoutError, KafkaError, OSError) as exc:
            self._ready, self._ready_at = False, time.monotonic()
            raise KafkaUnavailable(type(exc).__name__) from exc
