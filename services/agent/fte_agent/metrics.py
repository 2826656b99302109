"""The agent's Prometheus metrics. Rates are ratios of these counters, e.g. resolution rate =
agent_tickets_resolved_total / agent_replies_total."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter("agent_messages_total", "Inbound messages handled, by channel and outcome.", ["channel", "outcome"])
REPLIES = Counter(
    "agent_replies_total", "Replies accepted by the notifier, by channel and action.", ["channel", "action"]
)
RESOLVED = Counter(
    "agent_tickets_resolved_total", "Tickets the agent resolved with an answer, by channel.", ["channel"]
)
ESCALATIONS = Counter("agent_escalations_total", "Tickets handed to a person, by reason.", ["reason"])
FIRST_RESPONSE = Histogram(
    "agent_first_response_seconds",
    "From the provider receiving a ticket's first message to the notifier accepting the reply, by channel.",
    ["channel"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
SENTIMENT = Histogram(
    "agent_message_sentiment",
    "Sentiment of inbound messages, -1 to 1.",
    ["channel"],
    buckets=(-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
)
VERIFICATIONS = Counter(
    "agent_verifications_total",
    "One-time code steps by outcome: code_sent, verified, merged, wrong_code, code_expired, too_many_attempts, "
    "too_many_codes, unreachable, and the other refusals by their reason.",
    ["outcome"],
)
DELIVERY_EVENTS = Counter("agent_delivery_events_total", "Delivery outcomes applied, by kind.", ["kind"])
KNOWLEDGE_GAPS = Counter(
    "agent_knowledge_gaps_total",
    "Questions answered with low confidence or escalated as no answer found, sent to the knowledge service "
    "as knowledge gaps, by kind and result (recorded, failed).",
    ["kind", "result"],
)
