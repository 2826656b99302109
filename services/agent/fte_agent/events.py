"""Handlers of the events the agent follows besides inbound messages: delivery outcomes from the
notifier, and customer erasures and merges from identity."""

from __future__ import annotations

import logging

import asyncpg
from aiokafka import ConsumerRecord
from fte.common.v1 import common_pb2
from fte.events.v1 import customer_events_pb2, delivery_events_pb2
from fte_runtime import envelope
from fte_runtime.kafka import PoisonRecord

from fte_agent import metrics, store

log = logging.getLogger("fte.agent.events")

OUTCOME_TYPES = envelope.type_map(
    delivery_events_pb2.ReplyDelivered, delivery_events_pb2.DeliveryFailed, delivery_events_pb2.ReplyStatusChanged
)
# What a reply may move on to after the provider accepted it.
_ONWARD = (common_pb2.DELIVERY_STATUS_DELIVERED, common_pb2.DELIVERY_STATUS_READ)
CUSTOMER_TYPES = envelope.type_map(customer_events_pb2.CustomerErased, customer_events_pb2.CustomersMerged)


class EventHandlers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def delivery_outcome(self, record: ConsumerRecord) -> None:
        event = envelope.decode(record.value, record.headers, OUTCOME_TYPES)
        msg = event.message
        if isinstance(msg, delivery_events_pb2.ReplyDelivered):
            if not msg.request_id:
                raise PoisonRecord("ReplyDelivered without request_id")
            await store.apply_delivery_outcome(self.pool, msg.request_id, msg.delivery, common_pb2.DELIVERY_STATUS_SENT)
            metrics.DELIVERY_EVENTS.labels("delivered").inc()
        elif isinstance(msg, delivery_events_pb2.DeliveryFailed):
            if not msg.request_id:
                raise PoisonRecord("DeliveryFailed without request_id")
            await store.apply_delivery_outcome(
                self.pool, msg.request_id, msg.delivery, common_pb2.DELIVERY_STATUS_FAILED
            )
            metrics.DELIVERY_EVENTS.labels("failed").inc()
            log.warning("a reply could not be delivered", extra={"delivery": msg.delivery, "permanent": msg.permanent})
        elif isinstance(msg, delivery_events_pb2.ReplyStatusChanged):
            if not msg.request_id or msg.status not in _ONWARD:
                raise PoisonRecord("ReplyStatusChanged needs request_id and a delivered or read status")
            await store.apply_delivery_outcome(self.pool, msg.request_id, msg.delivery, msg.status)
            metrics.DELIVERY_EVENTS.labels(
                "read" if msg.status == common_pb2.DELIVERY_STATUS_READ else "received"
            ).inc()

    async def customer_changed(self, record: ConsumerRecord) -> None:
        event = envelope.decode(record.value, record.headers, CUSTOMER_TYPES)
        msg = event.message
        if isinstance(msg, customer_events_pb2.CustomerErased):
            if not msg.customer.startswith("customers/"):
                raise PoisonRecord("CustomerErased.customer must be 'customers/{id}'")
            count = await store.erase_customer(self.pool, msg.customer)
            log.info("customer data erased", extra={"messages": count})
        elif isinstance(msg, customer_events_pb2.CustomersMerged):
            if not (msg.source_customer.startswith("customers/") and msg.target_customer.startswith("customers/")):
                raise PoisonRecord("CustomersMerged needs source_customer and target_customer")
            await store.merge_customers(self.pool, msg.source_customer, msg.target_customer)
