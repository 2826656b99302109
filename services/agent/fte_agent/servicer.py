"""AgentService: the staff side of tickets, conversations and human replies."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.events.v1 import ticket_events_pb2
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime import topics
from fte_runtime.context import principal_var
from fte_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable, Violations
from fte_runtime.idempotency import check_request_id, derived_id
from fte_runtime.kafka import EventPublisher
from fte_runtime.names import make_name, parse_name
from fte_runtime.pagination import Page, page_size
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from fte_agent import metrics, reasons, store, ticket_metrics
from fte_agent.hours import ALWAYS_OPEN, SupportHours
from fte_agent.reasoner import Draft
from fte_agent.replies import send_request_from_context

# Drafts a suggested reply to a ticket's customer message (the processor's draft_reply).
Drafter = Callable[[store.TicketRow, store.MessageRow], Awaitable[Draft | None]]

C = common_pb2
SCOPES = {
    "GetTicket": "tickets.read",
    "ListTickets": "tickets.read",
    "ListMessages": "tickets.read",
    "GetCustomerHistory": "tickets.read",
    "UpdateTicket": "tickets.write",
    "ReplyToTicket": "tickets.write",
    "EscalateTicket": "tickets.write",
    "ResolveTicket": "tickets.write",
    "AddNote": "tickets.write",
    "ListNotes": "tickets.read",
    # Drafting is for those who reply, and it costs a search and an engine run.
    "SuggestReply": "tickets.write",
    "GetTicketMetrics": "tickets.read",
}
MAX_ACTOR = 200
# GetTicketMetrics' window bounds, and how far ahead of this clock `end_time` may be (clock skew).
MIN_METRICS_WINDOW = timedelta(hours=1)
MAX_METRICS_WINDOW = timedelta(days=90)
METRICS_CLOCK_SKEW = timedelta(minutes=5)
MAX_NOTE = 5000
_UPDATABLE = {"subject", "category", "priority", "status", "assignee"}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def etag(row: store.TicketRow) -> str:
    return hashlib.sha256(f"{row.id}:{row.version}".encode()).hexdigest()[:16]


def reply_due(row: store.TicketRow, hours: SupportHours, follow_up_hours: float) -> datetime | None:
    """When a person's reply is due (none once resolved): the promise made on escalation, or for a
    ticket never escalated its creation plus the follow-up hours, counted in support hours."""
    if row.status == store.STATUS_RESOLVED:
        return None
    promise = row.follow_up_by_time or row.create_time + timedelta(hours=follow_up_hours)
    since = promise - timedelta(hours=follow_up_hours) if row.follow_up_by_time else row.create_time
    return hours.reply_due(since, promise)


def ticket_proto(row: store.TicketRow, hours: SupportHours, follow_up_hours: float) -> agent_pb2.Ticket:
    t = agent_pb2.Ticket(
        name=make_name("tickets", row.id),
        customer=row.customer,
        conversation=make_name("conversations", row.conversation_id),
        channel=row.channel,
        subject=row.subject,
        category=row.category,
        priority=row.priority,
        status=row.status,
        escalation_reason=row.escalation_reason,
        escalation_detail=row.escalation_detail,
        sentiment=row.sentiment,
        assignee=row.assignee,
        etag=etag(row),
    )
    for field in ("create_time", "update_time", "first_response_time", "resolve_time", "follow_up_by_time"):
        ts = _ts(getattr(row, field))
        if ts is not None:
            getattr(t, field).CopyFrom(ts)
    due = _ts(reply_due(row, hours, follow_up_hours))
    if due is not None:
        t.reply_due_time.CopyFrom(due)
    return t


def message_proto(row: store.MessageRow) -> agent_pb2.Message:
    m = agent_pb2.Message(
        name=f"conversations/{row.conversation_id}/messages/{row.id}",
        ticket=make_name("tickets", row.ticket_id),
        author=row.author,
        channel=row.channel,
        text=row.text,
        delivery=row.delivery,
        delivery_status=row.delivery_status,
        actor=row.actor,
    )
    m.create_time.FromDatetime(row.create_time)
    return m


def note_proto(row: store.NoteRow) -> agent_pb2.Note:
    n = agent_pb2.Note(
        name=f"tickets/{row.ticket_id}/notes/{row.id}", text=row.text, actor=row.actor, principal=row.principal
    )
    n.create_time.FromDatetime(row.create_time)
    return n


def _actor(actor: str) -> str:
    """The named staff member, checked (the request's `actor`)."""
    if len(actor) > MAX_ACTOR or any(ch < " " for ch in actor):
        raise InvalidArgument(f"actor must be at most {MAX_ACTOR} printable characters", reason="INVALID_ACTOR")
    return actor.strip()


def _json_safe(fields: dict[str, Any]) -> dict[str, Any]:
    """Updated fields for the action record: enums are numbers, text stays text."""
    return {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in fields.items()}


def _principal() -> str:
    principal = principal_var.get()
    return principal.name if principal else ""


class AgentServicer(agent_service_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        notifier: notifier_service_pb2_grpc.NotifierServiceAsyncStub,
        publisher: EventPublisher | None,
        follow_up_hours: float = 24.0,
        *,
        hours: SupportHours = ALWAYS_OPEN,
        drafter: Drafter | None = None,
    ) -> None:
        self.pool = pool
        self.notifier = notifier
        self.publisher = publisher
        self.follow_up_hours = follow_up_hours
        self.hours = hours
        self.drafter = drafter

    def _proto(self, row: store.TicketRow) -> agent_pb2.Ticket:
        return ticket_proto(row, self.hours, self.follow_up_hours)

    async def _ticket(self, name: str, field: str = "name") -> store.TicketRow:
        ticket_id = parse_name(name, "tickets", field)
        row = await store.get_ticket(self.pool, ticket_id)
        if row is None:
            raise NotFound(f"ticket {ticket_id!r} does not exist", reason="TICKET_NOT_FOUND")
        return row

    async def GetTicket(
        self, request: agent_service_pb2.GetTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.GetTicketResponse:
        return agent_service_pb2.GetTicketResponse(ticket=self._proto(await self._ticket(request.name)))

    async def ListTickets(
        self, request: agent_service_pb2.ListTicketsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ListTicketsResponse:
        size = page_size(request.page_size)
        if request.customer:
            parse_name(request.customer, "customers", "customer")
        if request.unassigned and request.assignee:
            raise InvalidArgument("set assignee or unassigned, not both", reason="CONFLICTING_FILTERS")
        if len(request.assignee) > 200:
            raise InvalidArgument("assignee must be at most 200 characters", reason="ASSIGNEE_TOO_LONG")
        assignee = "" if request.unassigned else (request.assignee or None)
        filters = [request.status, request.channel, request.customer, request.escalation_reason, assignee]
        page = Page(size, request.page_token, filters)
        rows = await store.list_tickets(
            self.pool,
            status=request.status,
            channel=request.channel,
            customer=request.customer,
            escalation_reason=request.escalation_reason,
            assignee=assignee,
            after=tuple(page.position) if page.position else None,
            limit=page.limit,
        )
        rows, token = page.cut(rows, lambda r: [r.create_time.isoformat(), r.id])
        return agent_service_pb2.ListTicketsResponse(tickets=[self._proto(r) for r in rows], next_page_token=token)

    async def UpdateTicket(
        self, request: agent_service_pb2.UpdateTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.UpdateTicketResponse:
        v = Violations()
        v.require(request.ticket.name, "ticket.name")
        v.require(request.ticket.etag, "ticket.etag")
        paths = list(request.update_mask.paths)
        v.check(bool(paths), "update_mask", "is required")
        for path in paths:
            v.check(path in _UPDATABLE, "update_mask", f"{path!r} cannot be updated (allowed: {sorted(_UPDATABLE)})")
        t = request.ticket
        if "status" in paths:
            v.check(t.status != agent_pb2.TICKET_STATUS_UNSPECIFIED, "ticket.status", "must be set")
        if "subject" in paths:
            v.check(0 < len(t.subject) <= 200, "ticket.subject", "must be 1 to 200 characters")
        if "assignee" in paths:
            v.check(len(t.assignee) <= 200, "ticket.assignee", "must be at most 200 characters")
        v.raise_if_any()
        actor = _actor(request.actor)
        ticket_id = parse_name(t.name, "tickets", "ticket.name")
        fields: dict[str, Any] = {p: getattr(t, p) for p in paths}
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.lock_ticket(conn, ticket_id)
            if row is None:
                raise NotFound(f"ticket {ticket_id!r} does not exist", reason="TICKET_NOT_FOUND")
            if etag(row) != t.etag:
                raise Aborted("the ticket changed since it was read; read it again", reason="STALE_ETAG")
            updated = await store.update_ticket_fields(conn, ticket_id, fields)
            await store.record_staff_action(
                conn, ticket_id, "update", actor=actor, principal=_principal(), detail=_json_safe(fields)
            )
        return agent_service_pb2.UpdateTicketResponse(ticket=self._proto(updated))

    async def ListMessages(
        self, request: agent_service_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ListMessagesResponse:
        size = page_size(request.page_size, default=50)
        ticket = await self._ticket(request.ticket, "ticket")
        page = Page(size, request.page_token, ticket.id)
        rows = await store.list_messages(self.pool, ticket.id, int(page.position or 0), page.limit)
        rows, token = page.cut(rows, lambda r: r.id)
        return agent_service_pb2.ListMessagesResponse(messages=[message_proto(r) for r in rows], next_page_token=token)

    async def GetCustomerHistory(
        self, request: agent_service_pb2.GetCustomerHistoryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.GetCustomerHistoryResponse:
        parse_name(request.customer, "customers", "customer")
        page = Page(page_size(request.page_size, default=50), request.page_token, request.customer)
        rows = await store.customer_messages(self.pool, request.customer, page.position, page.limit)
        rows, token = page.cut(rows, lambda r: r.id)
        tickets = await store.customer_tickets(self.pool, request.customer)
        return agent_service_pb2.GetCustomerHistoryResponse(
            tickets=[self._proto(t) for t in tickets],
            messages=[message_proto(r) for r in rows],
            next_page_token=token,
        )

    async def ReplyToTicket(
        self, request: agent_service_pb2.ReplyToTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ReplyToTicketResponse:
        v = Violations()
        v.require(request.ticket, "ticket")
        v.check(len(request.text.strip()) > 0 and len(request.text) <= 20_000, "text", "must be 1 to 20000 characters")
        v.raise_if_any()
        # Prefixed with the ticket into the notifier's key, which must stay within the rule's 200.
        check_request_id(request.request_id, max_length=150)
        actor = _actor(request.actor)
        ticket = await self._ticket(request.ticket, "ticket")
        inbound = await store.latest_inbound_of_ticket(self.pool, ticket.id)
        ctx: dict[str, Any] = inbound.reply_context if inbound is not None else {}
        if not ctx.get("recipient"):
            raise FailedPrecondition("the ticket has no customer address to reply to", reason="NO_RECIPIENT")
        author = _principal()
        key = request.request_id or hashlib.sha256(f"{ticket.id}:{author}:{request.text}".encode()).hexdigest()[:32]
        request_id = f"staff-reply-{ticket.id}-{key}"
        async with self.pool.acquire() as conn, conn.transaction():
            row, new = await store.insert_staff_reply(conn, ticket, request.text, request_id, actor)
            if new:
                detail = {"message": row.id, "characters": len(request.text)}
                await store.record_staff_action(conn, ticket.id, "reply", actor=actor, principal=author, detail=detail)
            if ticket.status in (store.STATUS_OPEN, store.STATUS_ESCALATED):
                await store.update_ticket_fields(conn, ticket.id, {"status": store.STATUS_IN_PROGRESS})
        try:
            reply = await self.notifier.SendMessage(
                send_request_from_context(request_id, ticket.channel, ctx, request.text, ticket.id)
            )
        except grpc.aio.AioRpcError as exc:
            # Stored, not sent: the same request_id retried sends it exactly once.
            raise Unavailable(
                f"the notifier did not accept the reply: {exc.code().name}", reason="NOTIFIER_UNAVAILABLE"
            ) from exc
        row = await store.set_message_delivery(self.pool, row.id, reply.delivery.name, reply.delivery.status)
        await store.mark_first_response(self.pool, ticket.id)
        return agent_service_pb2.ReplyToTicketResponse(message=message_proto(row))

    async def EscalateTicket(
        self, request: agent_service_pb2.EscalateTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.EscalateTicketResponse:
        if len(request.detail) > 2000:
            raise InvalidArgument("detail must be at most 2000 characters", reason="DETAIL_TOO_LONG")
        request_id = check_request_id(request.request_id)
        actor = _actor(request.actor)
        ticket = await self._ticket(request.ticket, "ticket")
        reason = request.reason or C.ESCALATION_REASON_MANUAL
        if not reasons.name_of(reason):
            raise InvalidArgument("reason is not a known escalation reason", reason="INVALID_REASON")
        now = datetime.now(UTC)
        promise = (now + timedelta(hours=self.follow_up_hours)).replace(second=0, microsecond=0)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.update_ticket_fields(
                conn,
                ticket.id,
                {
                    "status": store.STATUS_ESCALATED,
                    "escalation_reason": reason,
                    "escalation_detail": request.detail,
                    "follow_up_by_time": promise,
                },
            )
            detail = {"reason": reasons.name_of(reason) or "manual"}
            await store.record_staff_action(
                conn, ticket.id, "escalate", actor=actor, principal=_principal(), detail=detail
            )
        metrics.ESCALATIONS.labels(reasons.name_of(reason) or "manual").inc()
        if self.publisher is not None:
            event = ticket_events_pb2.TicketEscalated(
                ticket=make_name("tickets", row.id),
                customer=row.customer,
                channel=row.channel,
                reason=reason,
                reason_detail=request.detail,
                summary=f"Escalated by staff: {row.subject[:200]}",
                priority=row.priority,
            )
            event.escalated_time.FromDatetime(now)
            event.follow_up_by_time.FromDatetime(promise)
            # A retry with the same request id publishes the same event id; consumers drop the copy.
            event_id = derived_id("escalation", row.id, request_id) if request_id else None
            await self.publisher.publish(topics.TICKETS_ESCALATED, event, key=row.id, event_id=event_id)
        return agent_service_pb2.EscalateTicketResponse(ticket=self._proto(row))

    async def ResolveTicket(
        self, request: agent_service_pb2.ResolveTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ResolveTicketResponse:
        if len(request.note) > 5000:
            raise InvalidArgument("note must be at most 5000 characters", reason="NOTE_TOO_LONG")
        actor = _actor(request.actor)
        ticket = await self._ticket(request.ticket, "ticket")
        fields: dict[str, Any] = {"status": store.STATUS_RESOLVED}
        if request.note:
            fields["resolution_note"] = request.note
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.update_ticket_fields(conn, ticket.id, fields)
            await store.record_staff_action(conn, ticket.id, "resolve", actor=actor, principal=_principal(), detail={})
        return agent_service_pb2.ResolveTicketResponse(ticket=self._proto(row))

    async def AddNote(
        self, request: agent_service_pb2.AddNoteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.AddNoteResponse:
        v = Violations()
        v.require(request.ticket, "ticket")
        v.check(
            len(request.text.strip()) > 0 and len(request.text) <= MAX_NOTE,
            "text",
            f"must be 1 to {MAX_NOTE} characters",
        )
        v.raise_if_any()
        request_id = check_request_id(request.request_id, max_length=150)
        actor = _actor(request.actor)
        ticket = await self._ticket(request.ticket, "ticket")
        async with self.pool.acquire() as conn, conn.transaction():
            # Keyed by ticket too: the same key on another ticket is another note.
            key = f"{ticket.id}-{request_id}" if request_id else None
            row = await store.add_note(
                conn, ticket.id, request.text, actor=actor, principal=_principal(), request_id=key
            )
        return agent_service_pb2.AddNoteResponse(note=note_proto(row))

    async def ListNotes(
        self, request: agent_service_pb2.ListNotesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ListNotesResponse:
        size = page_size(request.page_size, default=50)
        ticket = await self._ticket(request.ticket, "ticket")
        page = Page(size, request.page_token, ticket.id)
        rows = await store.list_notes(self.pool, ticket.id, int(page.position or 0), page.limit)
        rows, token = page.cut(rows, lambda r: r.id)
        return agent_service_pb2.ListNotesResponse(notes=[note_proto(r) for r in rows], next_page_token=token)

    async def SuggestReply(
        self, request: agent_service_pb2.SuggestReplyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.SuggestReplyResponse:
        ticket = await self._ticket(request.ticket, "ticket")
        if self.drafter is None:
            raise Unavailable("this agent drafts no replies", reason="NO_DRAFTER")
        message = await store.latest_customer_message(self.pool, ticket.id)
        if message is None or not message.text.strip():
            raise FailedPrecondition("the ticket has no customer message to answer", reason="NO_DRAFT")
        draft = await self.drafter(ticket, message)
        if draft is None:
            raise FailedPrecondition("the knowledge base has nothing relevant to this message", reason="NO_DRAFT")
        return agent_service_pb2.SuggestReplyResponse(
            text=draft.text, article=draft.article, article_url=draft.article_url, engine=draft.engine
        )

    async def GetTicketMetrics(
        self, request: agent_service_pb2.GetTicketMetricsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.GetTicketMetricsResponse:
        window = request.window.ToTimedelta()
        if not MIN_METRICS_WINDOW <= window <= MAX_METRICS_WINDOW:
            raise InvalidArgument("window must be 1 hour to 90 days", reason="INVALID_WINDOW")
        now = datetime.now(UTC)
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else now
        if end > now + METRICS_CLOCK_SKEW:
            raise InvalidArgument("end_time must not be in the future", reason="INVALID_WINDOW")
        start = end - window
        found = await ticket_metrics.window_metrics(self.pool, start, end)
        return agent_service_pb2.GetTicketMetricsResponse(
            start_time=_ts(start), end_time=_ts(end), channels=_channel_metrics(found)
        )


def _seconds(value: float | None) -> Duration | None:
    if value is None:
        return None
    d = Duration()
    d.FromTimedelta(timedelta(seconds=round(value, 3)))
    return d


def _channel_metrics(found: ticket_metrics.WindowMetrics) -> list[agent_service_pb2.ChannelMetrics]:
    """All channels first, then each channel by its number."""
    out = []
    for t in sorted(found.totals, key=lambda t: t.channel):
        out.append(
            agent_service_pb2.ChannelMetrics(
                channel=t.channel,  # type: ignore[arg-type]
                tickets=t.tickets,
                customer_messages=t.customer_messages,
                resolved_by_agent=t.resolved_by_agent,
                resolved_by_staff=t.resolved_by_staff,
                escalated=t.escalated,
                escalations=[
                    agent_service_pb2.ReasonCount(reason=r.reason, tickets=r.tickets)  # type: ignore[arg-type]
                    for r in found.reasons
                    if r.channel == t.channel
                ],
                agent_first_response_median=_seconds(t.agent_median),
                agent_first_response_p90=_seconds(t.agent_p90),
                staff_first_response_median=_seconds(t.staff_median),
                staff_first_response_p90=_seconds(t.staff_p90),
                sentiment=[
                    agent_service_pb2.DailySentiment(
                        day=d.day, tickets=d.tickets, mean=round(d.mean, 3), negative=d.negative
                    )
                    for d in found.days
                    if d.channel == t.channel
                ],
            )
        )
    return out
