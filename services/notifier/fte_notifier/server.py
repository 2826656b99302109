"""Wiring: the pool, the outbox store, the gRPC server, the dispatcher, the outcome relay and the
status consumer, started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime import topics
from fte_runtime.db import apply_migrations, create_pool
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration, run_until_signalled
from fte_runtime.kafka import EventPublisher, make_consumer, make_producer, run_consumer
from fte_runtime.logs import configure_logging

from fte_notifier.dispatcher import Dispatcher
from fte_notifier.outcomes import OutcomeRelay
from fte_notifier.servicer import NotifierServicer
from fte_notifier.settings import NotifierSettings
from fte_notifier.statuses_consumer import StatusHandler
from fte_notifier.store import Store

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
        self.pool = await create_pool(self.settings, SCHEMA, application_name="fte-notifier")
        self.store = Store(self.pool)
        self.dispatcher = Dispatcher(self.store, self.settings)
        self.relay: OutcomeRelay | None = None
        if self.settings.kafka_enabled:
            self.producer = make_producer(self.settings, "fte-notifier")
            await self.producer.start()
            self.relay = OutcomeRelay(self.pool, EventPublisher(self.producer, "notifier.fte"))
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
        if self.relay is not None:
            jobs += [self.relay.run, self._consume_statuses]
        return jobs

    async def _consume_statuses(self) -> None:
        assert self.producer is not None
        consumer = make_consumer(self.settings, self.settings.status_consumer_group, topics.DELIVERY_STATUS)
        await consumer.start()
        try:
            await run_consumer(consumer, StatusHandler(self.store), self.producer, self._stopping)
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.close()

    async def close(self) -> None:
        self._stopping.set()
        self.dispatcher.close()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()


async def serve(settings: NotifierSettings) -> None:
    configure_logging("notifier", settings.log_level, settings.log_json)
    notifier = Notifier(settings)
    await notifier.open()
    await run_until_signalled(notifier.grpc, cleanups=[notifier.close], background=notifier.background())
