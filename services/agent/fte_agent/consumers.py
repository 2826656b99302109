"""The agent's Kafka consumers: the keyed worker over incoming messages, and the delivery-outcome
and customer-change consumers. Each runs until `stopping` is set; the producer sends dead letters
(and the worker's retries)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from fte_runtime.kafka import consume, make_consumer

from fte_agent.events import EventHandlers
from fte_agent.processor import MessageProcessor
from fte_agent.settings import AgentSettings
from fte_agent.worker import KeyedWorker, TokenBucket


async def run_incoming(
    settings: AgentSettings, producer: AIOKafkaProducer, processor: MessageProcessor, stopping: asyncio.Event
) -> None:
    s = settings
    consumer = make_consumer(s, s.consumer_group)
    worker = KeyedWorker(
        consumer,
        producer,
        lambda record: processor.handle_record(record.value, record.headers),
        stopping,
        max_in_flight=s.max_in_flight,
        max_buffered=s.max_buffered,
        max_per_key=s.max_per_customer,
        pace=TokenBucket(s.rate_burst, s.rate_per_minute),
        max_attempts=s.max_attempts,
    )
    consumer.subscribe([s.incoming_topic], listener=worker)
    try:
        await consumer.start()
        await worker.run()
    finally:
        await consumer.stop()


async def run_outcomes(
    settings: AgentSettings, producer: AIOKafkaProducer, handlers: EventHandlers, stopping: asyncio.Event
) -> None:
    consumer = make_consumer(settings, f"{settings.consumer_group}-outcomes", settings.outcomes_topic)
    await consume(consumer, handlers.delivery_outcome, producer, stopping)


async def run_customer_changes(
    settings: AgentSettings, producer: AIOKafkaProducer, handlers: EventHandlers, stopping: asyncio.Event
) -> None:
    consumer = make_consumer(settings, f"{settings.consumer_group}-customers", settings.customers_topic)
    await consume(consumer, handlers.customer_changed, producer, stopping)
