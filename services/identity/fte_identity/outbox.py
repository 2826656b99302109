"""Identity's transactional outbox: CustomerErased and CustomersMerged (built here) are written in
the same transaction as the change they announce (`enqueue`) and relayed to Kafka in order by the
runtime's relay (`fte_runtime.outbox`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fte.events.v1 import customer_events_pb2
from fte_runtime import envelope, outbox
from fte_runtime.settings import KafkaSettings
from google.protobuf.message import Message

from fte_identity.names import customer_name, timestamp
from fte_identity.rows import MergeRow

# The events this outbox carries, as its consumers decode them (the relay sends rows as stored).
EVENT_TYPES = envelope.type_map(customer_events_pb2.CustomerErased, customer_events_pb2.CustomersMerged)
TABLE = outbox.OutboxTable("outbox", event_id="event_id", position="id", published="publish_time")


async def enqueue(conn: Any, topic: str, key: str, message: Message) -> None:
    """Add an event to the outbox; call inside the transaction that makes the change."""
    await outbox.enqueue(conn, TABLE, topic, key, message)


class OutboxRelay(outbox.OutboxRelay):
    """The runtime's relay on identity's `outbox` table."""

    def __init__(
        self, pool: Any, kafka: KafkaSettings, *, source: str, batch_size: int = 100, poll_seconds: float = 1.0
    ) -> None:
        super().__init__(
            pool,
            kafka,
            TABLE,
            source=source,
            client_id="fte-identity-outbox",
            batch_size=batch_size,
            poll_seconds=poll_seconds,
        )


def customers_merged(merge: MergeRow) -> customer_events_pb2.CustomersMerged:
    return customer_events_pb2.CustomersMerged(
        source_customer=customer_name(merge.source),
        target_customer=customer_name(merge.target),
        merged_time=timestamp(merge.merge_time),
    )


def customer_erased(customer_id: uuid.UUID, erase_time: datetime) -> customer_events_pb2.CustomerErased:
    return customer_events_pb2.CustomerErased(customer=customer_name(customer_id), erased_time=timestamp(erase_time))
