"""Kafka topic names. Each topic has a dead-letter twin, `<topic>.dlq`."""

from __future__ import annotations

# MessageReceived, gateway -> agent, keyed by the customer's channel identity.
TICKETS_INCOMING = "fte.tickets.incoming"
# TicketEscalated, agent -> the human team.
TICKETS_ESCALATED = "fte.tickets.escalated"
# DeliveryStatusChanged, gateway -> notifier, keyed by provider message id.
DELIVERY_STATUS = "fte.deliveries.status"
# ReplyDelivered and DeliveryFailed, notifier -> agent, keyed by ticket id.
DELIVERY_OUTCOMES = "fte.deliveries.outcomes"
# CustomerErased and CustomersMerged, identity -> every service holding customer data.
CUSTOMERS_CHANGED = "fte.customers.changed"

# The audit trail of dead letters replayed to their topics (`python -m fte_runtime.dlq`).
DLQ_REPLAYS = "fte.dlq.replays"

ALL = (TICKETS_INCOMING, TICKETS_ESCALATED, DELIVERY_STATUS, DELIVERY_OUTCOMES, CUSTOMERS_CHANGED)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"
