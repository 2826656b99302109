"""SQL for the outbox: deliveries, their parts, provider statuses and outcome events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2
from fte_runtime import outbox, topics, tracing
from fte_runtime.context import current_correlation_id
from fte_runtime.enums import value_names
from google.protobuf.message import Message

from fte_notifier.statuses import DELIVERED, FAILED, QUEUED, READ, SENT, advances, combine

# The outbox of outcome events, relayed by fte_notifier.outcomes.
OUTCOMES_TABLE = outbox.OutboxTable("outcome_events", event_id="id", position="seq", published="published_time")


class LeaseLost(Exception):
    """Another dispatcher owns the delivery now (this one was too slow or was presumed dead)."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    request_id: str
    fingerprint: str
    channel: int
    recipient: str
    subject: str
    text_body: str
    ticket_id: str
    reply_to: dict[str, Any] | None
    template: dict[str, Any] | None
    local_only: bool
    part_count: int


@dataclass(frozen=True, slots=True)
class Part:
    part_no: int
    state: str
    provider_message_id: str | None
    attempt_started_at: datetime | None


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    return json.loads(value)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as the store reads it (`delivery_view`: the row plus its parts' provider ids;
    `parts` only on claimed deliveries)."""

    id: uuid.UUID
    seq: int
    request_id: str
    fingerprint: str
    channel: common_pb2.Channel.ValueType
    recipient: str
    subject: str
    text_body: str
    ticket_id: str
    reply_to: dict[str, Any] | None
    template: dict[str, Any] | None
    status: common_pb2.DeliveryStatus.ValueType
    local_only: bool
    part_count: int
    attempts: int
    last_error: str
    last_error_code: str
    next_attempt_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    create_time: datetime
    update_time: datetime
    sent_time: datetime | None
    correlation_id: str | None
    # The W3C trace context of the SendMessage that queued it (None with tracing off).
    trace_context: dict[str, str] | None
    provider_message_ids: list[str]
    parts: tuple[Part, ...] = ()

    @classmethod
    def from_row(cls, row: asyncpg.Record, parts: tuple[Part, ...] = ()) -> Delivery:
        values = {name: row[name] for name in _DELIVERY_COLUMNS}
        values["reply_to"] = _json(values["reply_to"])
        values["template"] = _json(values["template"])
        values["trace_context"] = _json(values["trace_context"])
        values["provider_message_ids"] = list(values["provider_message_ids"] or [])
        return cls(**values, parts=parts)


_DELIVERY_COLUMNS = tuple(name for name in Delivery.__dataclass_fields__ if name != "parts")


class Store:
    def __init__(self, pool: asyncpg.Pool, on_outcome: Callable[[], None] = lambda: None) -> None:
        self.pool = pool
        # Called after a transaction that queued an outcome event commits (wakes the relay).
        self._on_outcome = on_outcome

    # --- requests ---------------------------------------------------------------------------

    async def insert(self, new: NewDelivery) -> tuple[Delivery, bool]:
        """The delivery for `new.request_id` and whether it already existed.

        The unique constraint on request_id decides between concurrent duplicates: the loser's
        INSERT waits for the winner's commit, does nothing, and reads the winner's row. The
        delivery and its parts are written by one statement, so one transaction."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                """WITH d AS (
                       INSERT INTO deliveries (id, request_id, fingerprint, channel, recipient, subject, text_body,
                           ticket_id, reply_to, template, local_only, part_count, correlation_id, trace_context)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14::jsonb)
                       ON CONFLICT (request_id) DO NOTHING
                       RETURNING *),
                   p AS (
                       INSERT INTO delivery_parts (delivery_id, part_no)
                       SELECT d.id, n FROM d, generate_series(0, d.part_count - 1) AS n)
                   SELECT d.*, '{}'::text[] AS provider_message_ids FROM d""",
                uuid.uuid4(),
                new.request_id,
                new.fingerprint,
                new.channel,
                new.recipient,
                new.subject,
                new.text_body,
                new.ticket_id,
                None if new.reply_to is None else json.dumps(new.reply_to),
                None if new.template is None else json.dumps(new.template),
                new.local_only,
                new.part_count,
                current_correlation_id(),
                _trace_context(),
            )
            if row is not None:
                return Delivery.from_row(row), False
            row = await conn.fetchrow("SELECT * FROM delivery_view WHERE request_id = $1", new.request_id)
        assert row is not None
        return Delivery.from_row(row), True

    async def get(self, delivery_id: uuid.UUID) -> Delivery | None:
        row = await self.pool.fetchrow("SELECT * FROM delivery_view WHERE id = $1", delivery_id)
        return None if row is None else Delivery.from_row(row)

    async def list_deliveries(
        self, *, limit: int, before_seq: int | None, ticket_id: str, channel: int, status: int
    ) -> list[Delivery]:
        rows = await self.pool.fetch(
            """SELECT * FROM delivery_view
                WHERE ($1::bigint IS NULL OR seq < $1)
                  AND ($2 = '' OR ticket_id = $2)
                  AND ($3 = 0 OR channel = $3)
                  AND ($4 = 0 OR status = $4)
                ORDER BY seq DESC LIMIT $5""",
            before_seq,
            ticket_id,
            channel,
            status,
            limit,
        )
        return [Delivery.from_row(r) for r in rows]

    # --- dispatcher ---------------------------------------------------------------------------

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Delivery]:
        """Due queued deliveries, leased to `owner`. SKIP LOCKED lets dispatchers claim side by
        side; the lease (not the row lock) keeps the claim after this short transaction."""
        # Status 1 is QUEUED (fte.common.v1.DeliveryStatus).
        rows = await self.pool.fetch(
            """WITH due AS (
                    SELECT id FROM deliveries
                    WHERE status = 1 AND next_attempt_at <= now()
                      AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY next_attempt_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                UPDATE deliveries d
                   SET lease_owner = $1, lease_until = now() + make_interval(secs => $3),
                       attempts = d.attempts + 1, update_time = now()
                  FROM due WHERE d.id = due.id
                RETURNING d.id""",
            owner,
            limit,
            lease_seconds,
        )
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        claimed = await self.pool.fetch(
            "SELECT * FROM delivery_view WHERE id = ANY($1::uuid[]) ORDER BY next_attempt_at", ids
        )
        parts: dict[uuid.UUID, list[Part]] = {}
        for r in await self.pool.fetch(
            """SELECT delivery_id, part_no, state, provider_message_id, attempt_started_at FROM delivery_parts
               WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, part_no""",
            ids,
        ):
            parts.setdefault(r["delivery_id"], []).append(
                Part(r["part_no"], r["state"], r["provider_message_id"], r["attempt_started_at"])
            )
        return [Delivery.from_row(r, tuple(parts.get(r["id"], ()))) for r in claimed]

    async def begin_part(self, delivery_id: uuid.UUID, part_no: int, owner: str, lease_seconds: float) -> None:
        """Renew the lease (fenced: only while we still own it) and mark the part in flight, in
        one statement committed before the provider is called."""
        marked = await self.pool.fetchval(
            """WITH owned AS (
                   UPDATE deliveries SET lease_until = now() + make_interval(secs => $3)
                   WHERE id = $1 AND lease_owner = $2 AND status = 1 RETURNING id)
               UPDATE delivery_parts p SET state = 'sending', attempt_started_at = now()
               FROM owned WHERE p.delivery_id = owned.id AND p.part_no = $4
               RETURNING true""",
            delivery_id,
            owner,
            lease_seconds,
            part_no,
        )
        if not marked:
            raise LeaseLost(str(delivery_id))

    async def part_sent(self, delivery_id: uuid.UUID, part_no: int, provider_message_id: str) -> None:
        """Record an accepted part. Not fenced by the lease: the provider has it either way."""
        await self.pool.execute(
            """UPDATE delivery_parts SET state = 'sent', provider_message_id = $3, sent_time = now()
               WHERE delivery_id = $1 AND part_no = $2""",
            delivery_id,
            part_no,
            provider_message_id,
        )

    async def part_not_sent(self, delivery_id: uuid.UUID, part_no: int) -> None:
        """The provider answered and refused: nothing to reconcile next time."""
        await self.pool.execute(
            "UPDATE delivery_parts SET state = 'pending' WHERE delivery_id = $1 AND part_no = $2 AND state = 'sending'",
            delivery_id,
            part_no,
        )

    async def complete(self, delivery: Delivery, owner: str, provider_ids: list[str], last_part: int | None) -> bool:
        """Every part is with the provider: record the last part's id (when given), mark the
        delivery SENT and queue ReplyDelivered, all in one statement. The part is recorded even
        if the lease was lost meanwhile: the provider has it either way."""
        sent_time = datetime.now(UTC)
        event = delivery_events_pb2.ReplyDelivered(
            delivery=f"deliveries/{delivery.id}",
            request_id=delivery.request_id,
            ticket_id=delivery.ticket_id,
            channel=delivery.channel,
            provider_message_ids=provider_ids,
        )
        event.sent_time.FromDatetime(sent_time)
        row = await self.pool.fetchrow(
            """WITH part AS (
                   UPDATE delivery_parts
                   SET state = 'sent', provider_message_id = ($3::text[])[part_no + 1], sent_time = $4
                   WHERE delivery_id = $1 AND ($5::int IS NULL OR part_no = $5) AND state <> 'sent'),
               d AS (
                   UPDATE deliveries SET status = 2, sent_time = $4, update_time = now(), lease_owner = NULL,
                       lease_until = NULL, last_error = '', last_error_code = ''
                   WHERE id = $1 AND lease_owner = $2 AND status = 1 RETURNING id),
               ev AS (
                   INSERT INTO outcome_events (id, topic, record_key, event_type, payload, correlation_id,
                                               trace_context)
                   SELECT $6, $7, $8, $9, $10, $11, $12::jsonb FROM d)
               SELECT EXISTS (SELECT 1 FROM provider_statuses WHERE provider_message_id = ANY($3::text[])) AS early
               FROM d""",
            delivery.id,
            owner,
            provider_ids,
            sent_time,
            last_part,
            uuid.uuid4(),
            topics.DELIVERY_OUTCOMES,
            _outcome_key(delivery),
            event.DESCRIPTOR.full_name,
            event.SerializeToString(),
            _correlation_id(delivery),
            _trace_context(),
        )
        if row is None:
            return False
        self._on_outcome()
        if row["early"]:
            # Statuses the provider reported before the ids were recorded.
            async with self.pool.acquire() as conn, conn.transaction():
                added = await _apply_part_statuses(conn, delivery.id)
            if added:
                self._on_outcome()
        return True

    async def retry_later(
        self, delivery_id: uuid.UUID, owner: str, error: str, code: str, delay_seconds: float
    ) -> None:
        await self.pool.execute(
            """UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4,
                    last_error_code = $5, lease_owner = NULL, lease_until = NULL, update_time = now()
                WHERE id = $1 AND lease_owner = $2 AND status = 1""",
            delivery_id,
            owner,
            delay_seconds,
            error,
            code,
        )

    async def fail(self, delivery: Delivery, owner: str | None, reason: str, code: str, *, permanent: bool) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            failed_time = await conn.fetchval(
                """UPDATE deliveries SET status = 5, last_error = $3, last_error_code = $4,
                        lease_owner = NULL, lease_until = NULL, update_time = now()
                    WHERE id = $1 AND ($2::text IS NULL OR lease_owner = $2) AND status = 1
                    RETURNING update_time""",
                delivery.id,
                owner,
                reason[:2000],
                code,
            )
            if failed_time is None:
                return False
            attempts = await conn.fetchval("SELECT attempts FROM deliveries WHERE id = $1", delivery.id)
            await _add_outcome(conn, _failed_event(delivery, reason, code, attempts, permanent, failed_time), delivery)
        self._on_outcome()
        return True

    # --- status events ------------------------------------------------------------------------

    async def apply_status(
        self, provider_message_id: str, status: int, error_code: str, error_message: str, occurred: datetime
    ) -> None:
        """Record a provider status (idempotent, forward only) and fold it into its delivery."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT status FROM provider_statuses WHERE provider_message_id = $1 FOR UPDATE", provider_message_id
            )
            if current is None:
                await conn.execute(
                    """INSERT INTO provider_statuses (provider_message_id, status, error_code, error_message,
                           occurred_time) VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (provider_message_id) DO NOTHING""",
                    provider_message_id,
                    status,
                    error_code,
                    error_message[:2000],
                    occurred,
                )
            elif advances(current, status):
                await conn.execute(
                    """UPDATE provider_statuses SET status = $2, error_code = $3, error_message = $4,
                           occurred_time = $5, update_time = now() WHERE provider_message_id = $1""",
                    provider_message_id,
                    status,
                    error_code,
                    error_message[:2000],
                    occurred,
                )
            else:
                return
            delivery_id = await conn.fetchval(
                "SELECT delivery_id FROM delivery_parts WHERE provider_message_id = $1", provider_message_id
            )
            if delivery_id is None:
                return
            added = await _apply_part_statuses(conn, delivery_id)
        if added:
            self._on_outcome()

    # --- outcome relay ------------------------------------------------------------------------

    async def outbox_rows(self, limit: int) -> list[Delivery]:
        return await self.list_deliveries(limit=limit, before_seq=None, ticket_id="", channel=0, status=0)


def _failed_event(  # noqa: PLR0917 - the event's fields
    delivery: Delivery, reason: str, code: str, attempts: int, permanent: bool, when: datetime
) -> delivery_events_pb2.DeliveryFailed:
    event = delivery_events_pb2.DeliveryFailed(
        delivery=f"deliveries/{delivery.id}",
        request_id=delivery.request_id,
        ticket_id=delivery.ticket_id,
        channel=delivery.channel,
        reason=reason[:2000],
        provider_error_code=code,
        attempts=attempts,
        permanent=permanent,
    )
    event.failed_time.FromDatetime(when)
    return event


def _outcome_key(delivery: Delivery) -> str:
    # Keyed by ticket so one ticket's outcomes stay in order.
    return str(delivery.ticket_id or delivery.request_id)


def _correlation_id(delivery: Delivery) -> str:
    # The SendMessage's, for deliveries queued since outcomes carry it.
    return str(delivery.correlation_id or current_correlation_id())


def _trace_context() -> str | None:
    fields = tracing.carrier()
    return None if fields is None else json.dumps(fields)


async def _add_outcome(conn: asyncpg.Connection, event: Message, delivery: Delivery) -> None:
    await outbox.enqueue(
        conn,
        OUTCOMES_TABLE,
        topics.DELIVERY_OUTCOMES,
        _outcome_key(delivery),
        event,
        correlation_id=_correlation_id(delivery),
    )


async def _apply_part_statuses(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> bool:
    """Recompute a sent delivery's status from its parts' provider statuses; forward only. True
    when that queued an outcome event."""
    await conn.execute("SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id)
    row = await conn.fetchrow("SELECT * FROM delivery_view WHERE id = $1", delivery_id)
    delivery = None if row is None else Delivery.from_row(row)
    if delivery is None or delivery.status == QUEUED:
        return False  # the dispatcher folds statuses in when it completes the delivery
    parts = await conn.fetch(
        """SELECT p.state, COALESCE(s.status, $2) AS status, s.error_code, s.error_message
           FROM delivery_parts p LEFT JOIN provider_statuses s USING (provider_message_id)
           WHERE p.delivery_id = $1""",
        delivery_id,
        SENT,
    )
    if not parts or any(p["state"] != "sent" for p in parts):
        return False
    new = combine([p["status"] for p in parts])
    if not advances(delivery.status, new):
        return False
    if new == FAILED:
        bad = next(p for p in parts if p["status"] == FAILED)
        reason = bad["error_message"] or "the provider reported the message as failed"
        when = await conn.fetchval(
            """UPDATE deliveries SET status = $2, last_error = $3, last_error_code = $4, update_time = now()
               WHERE id = $1 RETURNING update_time""",
            delivery_id,
            FAILED,
            reason,
            bad["error_code"] or "",
        )
        error_code = bad["error_code"] or ""
        await _add_outcome(conn, _failed_event(delivery, reason, error_code, delivery.attempts, True, when), delivery)
        return True
    changed = await conn.fetchval(
        "UPDATE deliveries SET status = $2, update_time = now() WHERE id = $1 RETURNING update_time", delivery_id, new
    )
    if new not in (DELIVERED, READ):
        return False
    # Delivered or read: the agent stores it on the reply, and open staff pages show it.
    event = delivery_events_pb2.ReplyStatusChanged(
        delivery=f"deliveries/{delivery.id}",
        request_id=delivery.request_id,
        ticket_id=delivery.ticket_id,
        channel=delivery.channel,
        status=new,  # type: ignore[arg-type]
    )
    event.change_time.FromDatetime(changed)
    await _add_outcome(conn, event, delivery)
    return True


CHANNEL_NAMES = value_names(common_pb2.Channel)
