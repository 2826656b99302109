# ruff: noqa: S608 - the queries are built from this module's constants only; values are bound.
"""What happened to the tickets opened in a window (AgentService.GetTicketMetrics): SQL over the
agent's schema, one aggregate per question, each per channel and for all channels together.

Figures describe the tickets as they are now: a ticket opened in the window and resolved after it
counts as resolved. First responses are measured from the ticket's first customer message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from fte.agent.v1 import agent_pb2

from fte_agent.store import STATUS_RESOLVED

# The agent's "negative" tone (fte_agent.reader.TONES lies between -0.5 and -1 for it).
NEGATIVE_BELOW = -0.3
ALL_CHANNELS = 0

# Per ticket of the window: its first customer, agent and staff messages and how many the customer
# wrote; one pass over each ticket's messages (messages_ticket_idx). A wait is NULL without a reply
# (least() skips NULLs) and never negative.
_WINDOW = """
    WITH w AS (
        SELECT t.channel, t.status, t.escalation_reason, t.sentiment, t.create_time,
               m.customer_messages,
               extract(epoch FROM m.first_agent - least(m.first_customer, m.first_agent)) AS agent_wait,
               extract(epoch FROM m.first_staff - least(m.first_customer, m.first_staff)) AS staff_wait
        FROM tickets t
        LEFT JOIN LATERAL (
            SELECT count(*) FILTER (WHERE author = $3) AS customer_messages,
                   min(create_time) FILTER (WHERE author = $3) AS first_customer,
                   min(create_time) FILTER (WHERE author = $4) AS first_agent,
                   min(create_time) FILTER (WHERE author = $5) AS first_staff
            FROM messages WHERE ticket_id = t.id
        ) m ON true
        WHERE t.create_time >= $1 AND t.create_time < $2
    )
"""
_ARGS = (agent_pb2.AUTHOR_CUSTOMER, agent_pb2.AUTHOR_AGENT, agent_pb2.AUTHOR_HUMAN)
_CHANNEL = f"CASE WHEN GROUPING(channel) = 1 THEN {ALL_CHANNELS} ELSE channel END AS channel"

_TOTALS = (
    _WINDOW
    + f"""
    SELECT {_CHANNEL},
           count(*) AS tickets,
           coalesce(sum(customer_messages), 0)::bigint AS customer_messages,
           count(*) FILTER (WHERE status = $6 AND escalation_reason = 0 AND staff_wait IS NULL) AS resolved_by_agent,
           count(*) FILTER (WHERE status = $6 AND (escalation_reason <> 0 OR staff_wait IS NOT NULL))
               AS resolved_by_staff,
           count(*) FILTER (WHERE escalation_reason <> 0) AS escalated,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY agent_wait) AS agent_median,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY agent_wait) AS agent_p90,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY staff_wait) AS staff_median,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY staff_wait) AS staff_p90
    FROM w GROUP BY GROUPING SETS ((channel), ())
    """
)
_REASONS = (
    _WINDOW
    + f"""
    SELECT {_CHANNEL}, escalation_reason AS reason, count(*) AS tickets
    FROM w WHERE escalation_reason <> 0
    GROUP BY GROUPING SETS ((channel, escalation_reason), (escalation_reason))
    ORDER BY tickets DESC, reason
    """
)
_DAYS = (
    _WINDOW
    + f"""
    SELECT {_CHANNEL}, to_char(create_time AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
           count(*) AS tickets, avg(sentiment) AS mean, count(*) FILTER (WHERE sentiment < $6) AS negative
    FROM w GROUP BY GROUPING SETS ((channel, day), (day))
    ORDER BY day
    """
)


@dataclass(frozen=True, slots=True)
class Totals:
    """One channel's (or all channels') figures; waits in seconds, None when nobody answered."""

    channel: int
    tickets: int
    customer_messages: int
    resolved_by_agent: int
    resolved_by_staff: int
    escalated: int
    agent_median: float | None
    agent_p90: float | None
    staff_median: float | None
    staff_p90: float | None


@dataclass(frozen=True, slots=True)
class ReasonCount:
    channel: int
    reason: int
    tickets: int


@dataclass(frozen=True, slots=True)
class Day:
    channel: int
    day: str
    tickets: int
    mean: float
    negative: int


@dataclass(frozen=True, slots=True)
class WindowMetrics:
    totals: list[Totals]
    reasons: list[ReasonCount]
    days: list[Day]


async def window_metrics(pool: asyncpg.Pool, start: datetime, end: datetime) -> WindowMetrics:
    """The figures of the tickets opened in [start, end), read in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        totals = await conn.fetch(_TOTALS, start, end, *_ARGS, STATUS_RESOLVED)
        reasons = await conn.fetch(_REASONS, start, end, *_ARGS)
        days = await conn.fetch(_DAYS, start, end, *_ARGS, NEGATIVE_BELOW)
    return WindowMetrics(
        totals=[Totals(**dict(r)) for r in totals],
        reasons=[ReasonCount(**dict(r)) for r in reasons],
        days=[Day(**{**dict(r), "mean": float(r["mean"])}) for r in days],
    )
