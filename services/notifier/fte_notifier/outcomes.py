"""Outcome events (ReplyDelivered, DeliveryFailed, ReplyStatusChanged): written to the `outcome_events`
outbox in the transaction that decides them, relayed to Kafka by the runtime's relay (`fte_runtime.outbox`).

At least once: rows are marked published only after the broker acknowledged them; a crash in
between publishes them again with the same CloudEvents id (the row id), so consumers can drop
the repeat by `ce_id`.
"""

from __future__ import annotations

from typing import Any

from fte_runtime import outbox
from fte_runtime.settings import KafkaSettings

from fte_notifier.store import OUTCOMES_TABLE


class OutcomeRelay(outbox.OutboxRelay):
    """The runtime's relay on the notifier's `outcome_events` table."""

    def __init__(self, pool: Any, kafka: KafkaSettings, *, source: str, poll_seconds: float = 0.5) -> None:
        super().__init__(
            pool,
            kafka,
            OUTCOMES_TABLE,
            source=source,
            client_id="fte-notifier-outcomes",
            batch_size=500,
            poll_seconds=poll_seconds,
        )
