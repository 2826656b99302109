"""The notifier service: its pool and outbox store, NotifierService, the dispatcher, and (with
Kafka) the outcome relay and the status consumer."""

from __future__ import annotations

import logging

from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime import db, envelope, service, topics, tracing
from fte_runtime.db import create_pool
from fte_runtime.kafka import consume, make_consumer, start_producer

from fte_notifier.dispatcher import Dispatcher
from fte_notifier.outcomes import OutcomeRelay
from fte_notifier.servicer import NotifierServicer
from fte_notifier.settings import NotifierSettings
from fte_notifier.statuses_consumer import StatusHandler
from fte_notifier.store import Store

log = logging.getLogger("fte.notifier")

SCHEMA = "notifier"
DOMAIN = envelope.service_source("notifier")
SERVICE_NAME = "fte.notifier.v1.NotifierService"
SCOPES = {"SendMessage": "notifier.send", "GetDelivery": "notifier.read", "ListDeliveries": "notifier.read"}


async def migrate(settings: NotifierSettings) -> list[str]:
    return await db.migrate(settings, SCHEMA, "fte_notifier")


class Notifier(service.Service[NotifierSettings]):
    """The whole service. `serve()` runs it until SIGTERM; tests use `start()` / `stop()`.

    The broker being down (at start-up or later) delays events, never SendMessage or
    deliveries: outcomes wait in the outbox table."""

    name = "notifier"
    domain = DOMAIN

    async def open(self) -> None:
        s = self.settings
        if tracing.enabled():
            from opentelemetry.instrumentation.requests import RequestsInstrumentor

            # The Twilio SDK's HTTP calls (requests), inside the dispatcher's provider-call spans.
            RequestsInstrumentor().instrument()
        await migrate(s)
        pool = await self.resource(
            create_pool(s, SCHEMA, application_name="fte-notifier", reset_on_release=False), lambda p: p.close()
        )
        self.keep_quotas(pool)
        relay = OutcomeRelay(pool, s, source=DOMAIN) if s.kafka_enabled else None
        self.store = Store(pool, on_outcome=relay.wake if relay is not None else lambda: None)
        self.dispatcher = Dispatcher(self.store, s)
        self.on_close(self._close_dispatcher)
        servicer = NotifierServicer(self.store, s, self.dispatcher.wake)
        self.register(SERVICE_NAME, servicer, notifier_service_pb2_grpc.add_NotifierServiceServicer_to_server, SCOPES)
        self.background("dispatcher", self.dispatcher.run)
        if relay is not None:
            self.on_close(relay.close)
            self.background("outcome relay", relay.run)
            self.background("status consumer", self._consume_statuses)

    async def _close_dispatcher(self) -> None:
        self.dispatcher.close()

    async def _consume_statuses(self) -> None:
        producer = await start_producer(self.settings, "fte-notifier")  # dead letters
        try:
            consumer = make_consumer(self.settings, self.settings.status_consumer_group, topics.DELIVERY_STATUS)
            await consume(consumer, StatusHandler(self.store), producer, self.stopping)
        finally:
            await producer.stop()


async def serve(settings: NotifierSettings) -> None:
    await Notifier(settings).serve()
