"""SQL over the agent's schema: conversations, tickets, messages and handled inbound messages.

Every worker step is one transaction, and each step records how far the handling of an inbound
message got (`inbound.state`), so a redelivered message resumes where the last attempt stopped.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2

STATUS_OPEN = agent_pb2.TICKET_STATUS_OPEN
STATUS_IN_PROGRESS = agent_pb2.TICKET_STATUS_IN_PROGRESS
STATUS_RESOLVED = agent_pb2.TICKET_STATUS_RESOLVED
STATUS_ESCALATED = agent_pb2.TICKET_STATUS_ESCALATED

# Delivery statuses only move forward, and their numbers are in that order (FAILED, last, is
# final): GREATEST() in SQL keeps the furthest one.
assert (
    common_pb2.DELIVERY_STATUS_QUEUED
    < common_pb2.DELIVERY_STATUS_SENT
    < common_pb2.DELIVERY_STATUS_DELIVERED
    < common_pb2.DELIVERY_STATUS_READ
    < common_pb2.DELIVERY_STATUS_FAILED
)

ERASED_TEXT = "[erased]"


def new_ticket_id() -> str:
    return "T-" + secrets.token_hex(5).upper()


def new_conversation_id() -> str:
    return "c-" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Inbound:
    """Where the handling of one inbound message stands."""

    channel: int
    channel_message_id: str
    ticket_id: str
    conversation_id: str
    customer: str
    message_id: int
    state: str
    decision: dict[str, Any] | None
    reply_text: str | None
    reply_request_id: str | None
    ticket_status: int
    # True when this message opened a new ticket (rather than following up on one).
    new_ticket: bool = False


@dataclass(frozen=True, slots=True)
class NewInbound:
    channel: int
    channel_message_id: str
    customer: str
    text: str
    subject: str
    received_time: datetime
    ticket_reference: str
    category: int
    priority: int
    reply_context: dict[str, Any]
    # Channels whose conversation this message may continue (verified identity links only).
    allowed_channels: list[int]


async def find_inbound(pool: asyncpg.Pool, channel: int, cmid: str) -> Inbound | None:
    row = await pool.fetchrow(
        """SELECT i.*, t.conversation_id, t.customer, t.status AS ticket_status,
                  r.text AS reply_text, r.request_id AS reply_request_id
           FROM inbound i JOIN tickets t ON t.id = i.ticket_id
           LEFT JOIN messages r ON r.id = i.reply_message_id
           WHERE i.channel = $1 AND i.channel_message_id = $2""",
        channel,
        cmid,
    )
    if row is None:
        return None
    return Inbound(
        channel=row["channel"],
        channel_message_id=row["channel_message_id"],
        ticket_id=row["ticket_id"],
        conversation_id=row["conversation_id"],
        customer=row["customer"],
        message_id=row["message_id"],
        state=row["state"],
        decision=json.loads(row["decision"]) if row["decision"] else None,
        reply_text=row["reply_text"],
        reply_request_id=row["reply_request_id"],
        ticket_status=row["ticket_status"],
    )


async def record_inbound(pool: asyncpg.Pool, msg: NewInbound, idle: timedelta) -> Inbound:
    """Store an inbound message with its conversation and ticket, once.

    The (channel, channel message id) row is written in the same transaction as the message and
    ticket: a redelivery finds it and gets the stored state back instead of a second ticket. The
    whole step is the `record_inbound` SQL function (migration 0002): one round trip.
    """
    row = await pool.fetchrow(
        "SELECT * FROM record_inbound($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        msg.customer,
        msg.channel,
        msg.channel_message_id,
        msg.text,
        _subject(msg),
        msg.received_time,
        msg.ticket_reference,
        msg.category,
        msg.priority,
        json.dumps(msg.reply_context),
        msg.allowed_channels,
        idle,
        new_conversation_id(),
        new_ticket_id(),
        agent_pb2.AUTHOR_CUSTOMER,
        STATUS_OPEN,
        STATUS_IN_PROGRESS,
        STATUS_RESOLVED,
    )
    if row is None:
        found = await find_inbound(pool, msg.channel, msg.channel_message_id)
        assert found is not None  # stored by an earlier attempt; rows are never deleted
        return found
    return Inbound(
        channel=msg.channel,
        channel_message_id=msg.channel_message_id,
        ticket_id=row["ticket_id"],
        conversation_id=row["conversation_id"],
        customer=msg.customer,
        message_id=row["message_id"],
        state="received",
        decision=None,
        reply_text=None,
        reply_request_id=None,
        ticket_status=row["ticket_status"],
        new_ticket=row["new_ticket"],
    )


def _subject(msg: NewInbound) -> str:
    if msg.subject.strip():
        return msg.subject.strip()[:200]
    first = msg.text.strip().splitlines()[0] if msg.text.strip() else ""
    return first[:120]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    status: int
    sentiment: float
    category: int
    priority: int
    escalation_reason: int
    escalation_detail: str
    reply_text: str
    request_id: str
    decision: dict[str, Any]
    # The follow-up promised to the customer, when escalated.
    follow_up_by: datetime | None = None


async def record_decision(pool: asyncpg.Pool, inbound: Inbound, rec: DecisionRecord) -> None:
    """Store the reply (not yet sent), the ticket's new state and the decision: one statement, so
    one atomic round trip."""
    await pool.execute(
        """WITH reply AS (
               INSERT INTO messages (conversation_id, ticket_id, customer, author, channel, text, request_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (request_id) DO UPDATE SET request_id = EXCLUDED.request_id
               RETURNING id
           ), ticket AS (
               UPDATE tickets SET status = $8::smallint, sentiment = $9,
                   category = CASE WHEN category = 0 THEN $10::smallint ELSE category END,
                   priority = GREATEST(priority, $11::smallint),
                   escalation_reason = CASE WHEN $12::smallint <> 0 THEN $12::smallint ELSE escalation_reason END,
                   escalation_detail = CASE WHEN $12::smallint <> 0 THEN $13::text ELSE escalation_detail END,
                   follow_up_by_time = COALESCE($17::timestamptz, follow_up_by_time),
                   resolve_time = CASE WHEN $8::smallint = $14::smallint THEN now() ELSE NULL END,
                   update_time = now(), version = version + 1
               WHERE id = $2
               RETURNING id
           )
           UPDATE inbound SET state = 'decided', decision = $15, reply_message_id = (SELECT id FROM reply)
           WHERE channel = $5 AND channel_message_id = $16 AND EXISTS (SELECT 1 FROM ticket)""",
        inbound.conversation_id,
        inbound.ticket_id,
        inbound.customer,
        agent_pb2.AUTHOR_AGENT,
        inbound.channel,
        rec.reply_text,
        rec.request_id,
        rec.status,
        rec.sentiment,
        rec.category,
        rec.priority,
        rec.escalation_reason,
        rec.escalation_detail,
        STATUS_RESOLVED,
        json.dumps(rec.decision),
        inbound.channel_message_id,
        rec.follow_up_by,
    )


async def record_sent(
    pool: asyncpg.Pool, inbound: Inbound, request_id: str, delivery: str, status: int
) -> datetime | None:
    """The notifier accepted the reply. Returns the ticket's first response time if this set it.
    One statement: the delivery, the inbound state and the ticket change together."""
    first: datetime | None = await pool.fetchval(
        """WITH reply AS (
               UPDATE messages SET delivery_status = GREATEST(delivery_status, $3::smallint),
                   delivery = CASE WHEN $2::text = '' THEN delivery ELSE $2::text END
               WHERE request_id = $1
               RETURNING id
           ), handled AS (
               UPDATE inbound SET state = 'replied' WHERE channel = $4 AND channel_message_id = $5 RETURNING 1
           ), ticket AS (
               UPDATE tickets SET first_response_time = now()
               WHERE id = $6 AND first_response_time IS NULL
               RETURNING first_response_time
           )
           SELECT (SELECT first_response_time FROM ticket)
           WHERE EXISTS (SELECT 1 FROM reply) OR EXISTS (SELECT 1 FROM handled)""",
        request_id,
        delivery,
        status,
        inbound.channel,
        inbound.channel_message_id,
        inbound.ticket_id,
    )
    return first


async def apply_delivery_outcome(pool: asyncpg.Pool, request_id: str, delivery: str, status: int) -> bool:
    """A delivery event from the notifier; repeated or out-of-order events never move it backwards
    (the status numbers are in life order, QUEUED < SENT < DELIVERED < READ < FAILED, FAILED final)."""
    result: str = await pool.execute(
        """UPDATE messages SET delivery_status = GREATEST(delivery_status, $3::smallint),
               delivery = CASE WHEN delivery = '' THEN $2::text ELSE delivery END
           WHERE request_id = $1""",
        request_id,
        delivery,
        status,
    )
    return result != "UPDATE 0"


async def erase_customer(pool: asyncpg.Pool, customer: str) -> int:
    """Right to erasure: message texts, ticket subjects and the notes on the customer's tickets
    are blanked out."""
    async with pool.acquire() as conn, conn.transaction():
        result = await conn.execute(
            "UPDATE messages SET text = $2 WHERE customer = $1 AND text <> $2", customer, ERASED_TEXT
        )
        await conn.execute(
            """UPDATE tickets SET subject = $2, escalation_detail = '', resolution_note = '',
                   update_time = now(), version = version + 1
               WHERE customer = $1""",
            customer,
            ERASED_TEXT,
        )
        await conn.execute(
            "UPDATE inbound SET decision = NULL WHERE ticket_id IN (SELECT id FROM tickets WHERE customer = $1)",
            customer,
        )
        # Staff notes about the customer may quote them.
        await conn.execute(
            "UPDATE notes SET text = $2 WHERE ticket_id IN (SELECT id FROM tickets WHERE customer = $1)",
            customer,
            ERASED_TEXT,
        )
        return int(result.split()[-1])


async def merge_customers(pool: asyncpg.Pool, source: str, target: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for table in ("conversations", "tickets", "messages"):
            await conn.execute(f"UPDATE {table} SET customer = $2 WHERE customer = $1", source, target)  # noqa: S608
        await conn.execute("UPDATE tickets SET version = version + 1 WHERE customer = $1", target)


# --- staff side -------------------------------------------------------------------------------


def _columns(cls: type[Any], row: asyncpg.Record) -> dict[str, Any]:
    """The record's columns named like the fields of the dataclass `cls` (a query may select more)."""
    return {f.name: row[f.name] for f in fields(cls)}


@dataclass(frozen=True, slots=True)
class TicketRow:
    """A row of `tickets`."""

    id: str
    customer: str
    conversation_id: str
    channel: common_pb2.Channel.ValueType
    subject: str
    category: common_pb2.Category.ValueType
    priority: common_pb2.Priority.ValueType
    status: agent_pb2.TicketStatus.ValueType
    escalation_reason: common_pb2.EscalationReason.ValueType
    escalation_detail: str
    sentiment: float
    assignee: str
    resolution_note: str
    version: int
    create_time: datetime
    update_time: datetime
    first_response_time: datetime | None
    resolve_time: datetime | None
    follow_up_by_time: datetime | None

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> TicketRow:
        return cls(**_columns(cls, row))


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A row of `messages`: a customer's message or a reply (`request_id` and delivery on replies only)."""

    id: int
    conversation_id: str
    ticket_id: str
    customer: str
    author: agent_pb2.Author.ValueType
    channel: common_pb2.Channel.ValueType
    text: str
    request_id: str | None
    delivery: str
    delivery_status: common_pb2.DeliveryStatus.ValueType
    create_time: datetime
    actor: str

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> MessageRow:
        return cls(**_columns(cls, row))


@dataclass(frozen=True, slots=True)
class InboundRow:
    """A row of `inbound`, its JSON columns decoded."""

    channel: common_pb2.Channel.ValueType
    channel_message_id: str
    ticket_id: str
    message_id: int
    reply_message_id: int | None
    state: str
    decision: dict[str, Any] | None
    reply_context: dict[str, Any]
    received_time: datetime
    create_time: datetime

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> InboundRow:
        values = _columns(cls, row)
        values["decision"] = json.loads(row["decision"]) if row["decision"] else None
        values["reply_context"] = json.loads(row["reply_context"])
        return cls(**values)


def _ticket(row: asyncpg.Record | None) -> TicketRow | None:
    return None if row is None else TicketRow.from_record(row)


async def get_ticket(pool: asyncpg.Pool | asyncpg.Connection, ticket_id: str) -> TicketRow | None:
    return _ticket(await pool.fetchrow("SELECT * FROM tickets WHERE id = $1", ticket_id))


async def lock_ticket(conn: asyncpg.Connection, ticket_id: str) -> TicketRow | None:
    """The ticket, locked until the transaction ends (read, compare, update)."""
    return _ticket(await conn.fetchrow("SELECT * FROM tickets WHERE id = $1 FOR UPDATE", ticket_id))


async def mark_first_response(pool: asyncpg.Pool, ticket_id: str) -> None:
    """Record the ticket's first response time, unless it has one."""
    await pool.execute(
        "UPDATE tickets SET first_response_time = COALESCE(first_response_time, now()) WHERE id = $1", ticket_id
    )


async def list_tickets(
    pool: asyncpg.Pool,
    *,
    status: int,
    channel: int,
    customer: str,
    escalation_reason: int,
    after: tuple[str, str] | None,
    limit: int,
    assignee: str | None = None,
) -> list[TicketRow]:
    """Newest first; `assignee` "" means assigned to nobody, None any assignee."""
    clauses = ["TRUE"]
    args: list[Any] = []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.format(f"${len(args)}"))

    if status:
        add("status = {}", status)
    if channel:
        add("channel = {}", channel)
    if customer:
        add("customer = {}", customer)
    if escalation_reason:
        add("escalation_reason = {}", escalation_reason)
    if assignee is not None:
        add("assignee = {}", assignee)
    if after is not None:
        args.extend([datetime.fromisoformat(after[0]), after[1]])
        clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = f"SELECT * FROM tickets WHERE {' AND '.join(clauses)} ORDER BY create_time DESC, id DESC LIMIT ${len(args)}"  # noqa: S608
    return [TicketRow.from_record(r) for r in await pool.fetch(sql, *args)]


async def latest_customer_message(pool: asyncpg.Pool, ticket_id: str) -> MessageRow | None:
    row = await pool.fetchrow(
        "SELECT * FROM messages WHERE ticket_id = $1 AND author = $2 ORDER BY id DESC LIMIT 1",
        ticket_id,
        agent_pb2.AUTHOR_CUSTOMER,
    )
    return None if row is None else MessageRow.from_record(row)


async def list_messages(pool: asyncpg.Pool, ticket_id: str, after_id: int, limit: int) -> list[MessageRow]:
    rows = await pool.fetch(
        "SELECT * FROM messages WHERE ticket_id = $1 AND id > $2 ORDER BY id LIMIT $3", ticket_id, after_id, limit
    )
    return [MessageRow.from_record(r) for r in rows]


async def customer_messages(
    pool: asyncpg.Pool, customer: str, before_id: int | None, limit: int, channels: list[int] | None = None
) -> list[MessageRow]:
    """The customer's messages, newest first; `channels` restricts to those channels."""
    rows = await pool.fetch(
        """SELECT * FROM messages WHERE customer = $1 AND ($2::bigint IS NULL OR id < $2)
               AND ($4::smallint[] IS NULL OR channel = ANY($4))
           ORDER BY id DESC LIMIT $3""",
        customer,
        before_id,
        limit,
        channels,
    )
    return [MessageRow.from_record(r) for r in rows]


async def last_language(pool: asyncpg.Pool, customer: str) -> str | None:
    """The language the agent last answered the customer in (a code alone has no language)."""
    language: str | None = await pool.fetchval(
        """SELECT i.decision->>'language' FROM inbound i JOIN messages m ON m.id = i.message_id
           WHERE m.customer = $1 AND i.decision IS NOT NULL ORDER BY i.create_time DESC LIMIT 1""",
        customer,
    )
    return language


async def last_whatsapp_times(pool: asyncpg.Pool, recipients: list[str]) -> dict[str, datetime]:
    """When each WhatsApp address last wrote to us (WhatsApp's 24-hour window for a free-form message)."""
    rows = await pool.fetch(
        """SELECT reply_context->>'recipient' AS recipient, max(received_time) AS last FROM inbound
           WHERE channel = $1 AND reply_context->>'recipient' = ANY($2::text[]) GROUP BY 1""",
        common_pb2.CHANNEL_WHATSAPP,
        recipients,
    )
    return {r["recipient"]: r["last"] for r in rows}


async def customer_tickets(pool: asyncpg.Pool, customer: str, limit: int = 100) -> list[TicketRow]:
    rows = await pool.fetch(
        "SELECT * FROM tickets WHERE customer = $1 ORDER BY create_time DESC, id DESC LIMIT $2", customer, limit
    )
    return [TicketRow.from_record(r) for r in rows]


async def update_ticket_fields(conn: asyncpg.Connection, ticket_id: str, changes: dict[str, Any]) -> TicketRow:
    sets = [f"{name} = ${i + 2}" for i, name in enumerate(changes)]
    sets += ["update_time = now()", "version = version + 1"]
    if changes.get("status") == STATUS_RESOLVED:
        sets.append("resolve_time = COALESCE(resolve_time, now())")
    elif "status" in changes:
        sets.append("resolve_time = NULL")
    row = await conn.fetchrow(
        f"UPDATE tickets SET {', '.join(sets)} WHERE id = $1 RETURNING *",  # noqa: S608 - names from a fixed list
        ticket_id,
        *changes.values(),
    )
    return TicketRow.from_record(row)


async def insert_staff_reply(
    conn: asyncpg.Connection, ticket: TicketRow, text: str, request_id: str, actor: str = ""
) -> tuple[MessageRow, bool]:
    """The stored staff reply for `request_id`, and whether it was stored by this call."""
    existing = await conn.fetchrow("SELECT * FROM messages WHERE request_id = $1", request_id)
    if existing is not None:
        return MessageRow.from_record(existing), False
    row = await conn.fetchrow(
        """INSERT INTO messages (conversation_id, ticket_id, customer, author, channel, text, request_id, actor)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
        ticket.conversation_id,
        ticket.id,
        ticket.customer,
        agent_pb2.AUTHOR_HUMAN,
        ticket.channel,
        text,
        request_id,
        actor,
    )
    return MessageRow.from_record(row), True


async def record_staff_action(
    conn: asyncpg.Connection, ticket_id: str, action: str, *, actor: str, principal: str, detail: dict[str, Any]
) -> None:
    """Who did a staff action on a ticket: the calling principal and the staff member it named."""
    await conn.execute(
        "INSERT INTO staff_actions (ticket_id, action, actor, principal, detail) VALUES ($1, $2, $3, $4, $5)",
        ticket_id,
        action,
        actor,
        principal,
        json.dumps(detail),
    )


@dataclass(frozen=True, slots=True)
class NoteRow:
    """A row of `notes`."""

    id: int
    ticket_id: str
    text: str
    actor: str
    principal: str
    create_time: datetime

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> NoteRow:
        return cls(**_columns(cls, row))


async def add_note(
    conn: asyncpg.Connection, ticket_id: str, text: str, *, actor: str, principal: str, request_id: str | None
) -> NoteRow:
    """The note, stored once per `request_id` (a retry returns the stored one)."""
    row = await conn.fetchrow(
        """INSERT INTO notes (ticket_id, text, actor, principal, request_id) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (request_id) DO UPDATE SET request_id = EXCLUDED.request_id
           RETURNING *""",
        ticket_id,
        text,
        actor,
        principal,
        request_id,
    )
    return NoteRow.from_record(row)


async def list_notes(pool: asyncpg.Pool, ticket_id: str, after_id: int, limit: int) -> list[NoteRow]:
    rows = await pool.fetch(
        "SELECT * FROM notes WHERE ticket_id = $1 AND id > $2 ORDER BY id LIMIT $3", ticket_id, after_id, limit
    )
    return [NoteRow.from_record(r) for r in rows]


async def latest_inbound_of_ticket(conn: asyncpg.Connection | asyncpg.Pool, ticket_id: str) -> InboundRow | None:
    row = await conn.fetchrow(
        """SELECT i.*, m.channel AS msg_channel FROM inbound i JOIN messages m ON m.id = i.message_id
           WHERE i.ticket_id = $1 ORDER BY i.create_time DESC LIMIT 1""",
        ticket_id,
    )
    return None if row is None else InboundRow.from_record(row)


async def set_message_delivery(pool: asyncpg.Pool, message_id: int, delivery: str, status: int) -> MessageRow:
    row = await pool.fetchrow(
        "UPDATE messages SET delivery = $2, delivery_status = GREATEST(delivery_status, $3) WHERE id = $1 RETURNING *",
        message_id,
        delivery,
        status,
    )
    return MessageRow.from_record(row)
