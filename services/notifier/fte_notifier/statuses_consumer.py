"""Consumes DeliveryStatusChanged from `fte.deliveries.status` and applies it to deliveries."""

from __future__ import annotations

from datetime import UTC

from aiokafka import ConsumerRecord
from fte.events.v1 import delivery_events_pb2
from fte_runtime import envelope
from fte_runtime.kafka import PoisonRecord

from fte_notifier.statuses import DELIVERED, FAILED, READ, SENT
from fte_notifier.store import Store

_TYPES = envelope.type_map(delivery_events_pb2.DeliveryStatusChanged)
_ACCEPTED = (SENT, DELIVERED, READ, FAILED)


class StatusHandler:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, record: ConsumerRecord) -> None:
        event = envelope.decode(record.value, record.headers, _TYPES)  # InvalidEvent -> DLQ
        msg = event.message
        assert isinstance(msg, delivery_events_pb2.DeliveryStatusChanged)
        if not msg.provider_message_id:
            raise PoisonRecord("provider_message_id is required")
        if msg.status not in _ACCEPTED:
            raise PoisonRecord(f"status {msg.status} is not a provider status (sent, delivered, read, failed)")
        occurred = msg.occurred_time.ToDatetime(UTC) if msg.HasField("occurred_time") else event.time
        await self.store.apply_status(msg.provider_message_id, msg.status, msg.error_code, msg.error_message, occurred)
