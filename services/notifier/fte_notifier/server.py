"""Wiring: the pool, the outbox store, the gRPC server, the dispatcher, the outcome relay and the
status consumer, started and stopped as one."""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime import topics
from fte_runtime.db import apply_migrations, create_pool
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration, run_until_signalled
from fte_runtime.kafka import EventPublisher, make_consumer, make_producer, run_consumer
from fte_runtime.logs import configure_logging
from fte_runtime.tasks import cancel_all

from fte_notifier.dispatcher import Dispatcher
from fte_notifier.outcomes import OutcomeRelay
from fte_notifier.servicer import NotifierServicer
from fte_notifier.settings import NotifierSettings
from fte_notifier.statuses_consumer import StatusHandler
from fte_notifier.store import Store

log = logging.getLogger("fte.notifier")

T = TypeVar("T")

SCHEMA = "notifier"
SERVICE_NAME = "fte.notifier.v1.NotifierService"
SCOPES = {"SendMessage": "notifier.send", "GetDelivery": "notifier.read", "ListDeliveries": "notifier.read"}


async def migrate(settings: NotifierSettings) -> list[str]:
    applied: list[str] = await apply_migrations(
        settings.database_url.get_secret_value(), SCHEMA, importlib.resources.files("fte_notifier") / "migrations"
    )
    return applied


class Notifier:
    """The whole service. `serve()` runs it until SIGTERM; tests use `start()` / `stop()`."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        await migrate(self.settings)
        self.pool = await create_pool(self.settings, SCHEMA, application_name="fte-notifier", reset_on_release=False)
        self.store = Store(self.pool)
        self.dispatcher = Dispatcher(self.store, self.settings)
        servicer = NotifierServicer(self.store, self.settings, self.dispatcher.wake)
        self.grpc = GrpcServer(
            self.settings,
            domain="notifier.fte",
            services=[
                ServiceRegistration(
                    SERVICE_NAME, servicer, notifier_service_pb2_grpc.add_NotifierServiceServicer_to_server, SCOPES
                )
            ],
        )

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        jobs: list[Callable[[], Coroutine[Any, Any, None]]] = [self.dispatcher.run]
        if self.settings.kafka_enabled:
            jobs.append(self._kafka)
        return jobs

    async def _kafka(self) -> None:
        """Outcome relay and status consumer. The broker being down (at start-up or later)
        delays events, never SendMessage or deliveries: outcomes wait in the outbox table."""
        producer = await _retrying("kafka producer", self._start_producer)
        relay = OutcomeRelay(self.store.pool, EventPublisher(producer, "notifier.fte"))
        await asyncio.gather(relay.run(), self._consume_statuses(producer))

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = make_producer(self.settings, "fte-notifier")
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self.producer = producer
        return producer

    async def _consume_statuses(self, producer: AIOKafkaProducer) -> None:
        async def start() -> AIOKafkaConsumer:
            consumer = make_consumer(self.settings, self.settings.status_consumer_group, topics.DELIVERY_STATUS)
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            return consumer

        consumer = await _retrying("status consumer", start)
        try:
            await run_consumer(consumer, StatusHandler(self.store), producer, self._stopping)
        finally:
            await consumer.stop()

    async def start(self) -> int:
        await self.open()
        port: int = await self.grpc.start()
        self._tasks = [asyncio.create_task(job()) for job in self.background()]
        return port

    async def stop(self) -> None:
        self._stopping.set()
        await self.grpc.stop()
        await cancel_all(self._tasks)
        await self.close()

    async def close(self) -> None:
        self._stopping.set()
        self.dispatcher.close()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()


async def _retrying(what: str, start: Callable[[], Awaitable[T]]) -> T:
    delay = 0.5
    while True:
        try:
            return await start()
        except (KafkaError, OSError) as exc:
            log.warning("%s not started; retrying", what, extra={"error": type(exc).__name__, "in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def serve(settings: NotifierSettings) -> None:
    configure_logging("notifier", settings.log_level, settings.log_json)
    notifier = Notifier(settings)
    await notifier.open()
    await run_until_signalled(notifier.grpc, cleanups=[notifier.close], background=notifier.background())
