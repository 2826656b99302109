"""Handling of one inbound customer message, exactly once, resumable after a crash at any step.

1. Decode and validate; a poison event goes to the DLQ (PoisonRecord / InvalidEvent).
2. Already replied to (channel, channel message id)? Done: a duplicate is answered once.
3. Resolve the customer (Identity); store message, conversation and ticket with the
   de-duplication row in one transaction (the ticket exists before any reply).
4. Reason, then store the reply and the ticket's new state (state "decided").
5. Publish TicketEscalated when escalated (event id derived from the message), send the reply
   through the Notifier with a request id derived from the message, and mark it "replied".

A redelivery resumes at the stored state; the notifier de-duplicates by request id, so a crash
between sending and recording never sends twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2, ticket_events_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_pb2
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime import envelope, topics
from fte_runtime.context import correlation_id_var
from fte_runtime.kafka import EventPublisher, PoisonRecord
from google.protobuf.timestamp_pb2 import Timestamp

from fte_agent import channels, metrics, policy, store, verification
from fte_agent.reasoner import Action, Decision, Draft, Reasoner
from fte_agent.replies import reply_context, send_request_from_context
from fte_agent.tools import Request, Searcher, Toolbox

C = common_pb2
log = logging.getLogger("fte.agent.worker")

MESSAGE_TYPES = envelope.type_map(message_events_pb2.MessageReceived)
_TICKET_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
MAX_TEXT = 20_000


def reply_request_id(channel: int, channel_message_id: str) -> str:
    """The notifier idempotency key of the reply to one inbound message: the same on every retry."""
    digest = hashlib.sha256(f"{channel}:{channel_message_id}".encode()).hexdigest()[:40]
    return f"agent-reply-{digest}"


def gap_request_id(channel: int, channel_message_id: str) -> str:
    """The RecordKnowledgeGap idempotency key of one inbound message: a redelivery records once."""
    return "agent-gap-" + reply_request_id(channel, channel_message_id).removeprefix("agent-reply-")


def knowledge_gap(decision: dict[str, Any], gap_below: float) -> tuple[int, list[tuple[str, float]]] | None:
    """(KnowledgeGap.Outcome, candidates best first) when a stored decision shows a knowledge gap:
    escalated as no answer found after searching, or answered from a best passage whose similarity
    is below `gap_below`. Candidates are the searched articles with their best similarity."""
    searches = decision.get("searches") or []
    if not searches:
        return None  # the knowledge base was not asked: nothing it lacks
    best: dict[str, float] = {}
    for search in searches:
        # Decisions stored before `similarities` existed have only the first result's.
        similarities = search.get("similarities") or [search.get("top_score", 0.0)]
        for slug, similarity in zip(search.get("slugs") or [], similarities, strict=False):
            name = f"articles/{slug}"
            best[name] = max(best.get(name, similarity), similarity)
    candidates = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    action = decision.get("action")
    if action == Action.ESCALATE and decision.get("escalation_reason") == C.ESCALATION_REASON_NO_ANSWER_FOUND:
        return knowledge_pb2.KnowledgeGap.OUTCOME_NO_ANSWER_FOUND, candidates
    if action == Action.ANSWER and (not candidates or candidates[0][1] < gap_below):
        return knowledge_pb2.KnowledgeGap.OUTCOME_LOW_CONFIDENCE, candidates
    return None


def validate(msg: message_events_pb2.MessageReceived) -> None:
    """Raise PoisonRecord for an event that can never be handled."""
    problems: list[str] = []
    if msg.channel not in channels.NAMES:
        problems.append("channel is missing or unknown")
    if not msg.channel_message_id or len(msg.channel_message_id) > 500:
        problems.append("channel_message_id is required (at most 500 characters)")
    if not msg.text_body.strip() and not msg.subject.strip():
        problems.append("text_body or subject is required")
    if len(msg.text_body) > MAX_TEXT:
        problems.append(f"text_body is longer than {MAX_TEXT} characters")
    if not msg.HasField("received_time"):
        problems.append("received_time is required")
    follow_up = msg.channel == C.CHANNEL_WEB_FORM and msg.web_form.follow_up
    if follow_up and not msg.web_form.ticket_reference:
        problems.append("web_form.ticket_reference is required on a status-page follow-up")
    if msg.channel in (C.CHANNEL_EMAIL, C.CHANNEL_WEB_FORM) and not follow_up and "@" not in msg.sender.email:
        problems.append("sender.email is required on this channel")
    if msg.channel == C.CHANNEL_WHATSAPP and not (msg.sender.whatsapp_address or msg.sender.phone):
        problems.append("sender.whatsapp_address or sender.phone is required on WhatsApp")
    ref = msg.web_form.ticket_reference
    if msg.channel == C.CHANNEL_WEB_FORM and ref and not _TICKET_REF.match(ref):
        problems.append("web_form.ticket_reference must be 3-64 letters, digits, '-' or '_'")
    if problems:
        raise PoisonRecord("invalid MessageReceived: " + "; ".join(problems))


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


class MessageProcessor:
    def __init__(
        self,
        pool: asyncpg.Pool,
        identity: identity_service_pb2_grpc.IdentityServiceAsyncStub,
        notifier: notifier_service_pb2_grpc.NotifierServiceAsyncStub,
        searcher: Searcher,
        *,
        publisher: EventPublisher,
        reasoner: Reasoner,
        conversation_idle: timedelta,
        gap_below: float = 0.45,
    ) -> None:
        self.pool = pool
        self.identity = identity
        self.notifier = notifier
        self.searcher = searcher
        self.publisher = publisher
        self.reasoner = reasoner
        self.conversation_idle = conversation_idle
        self.verifier = verification.Verifier(identity, notifier)
        # Answers whose best passage similarity is below this are recorded as knowledge gaps.
        self.gap_below = gap_below

    async def handle_record(self, value: bytes | None, headers: Any) -> str:
        event = envelope.decode(value, headers, MESSAGE_TYPES)
        if event.correlation_id:
            correlation_id_var.set(event.correlation_id)
        msg = event.message
        assert isinstance(msg, message_events_pb2.MessageReceived)
        return await self.handle(msg)

    async def handle(self, msg: message_events_pb2.MessageReceived) -> str:
        """Handle one message; returns what happened ("replied", "duplicate")."""
        validate(msg)
        if "\x00" in msg.text_body + msg.subject + msg.display_name:
            # PostgreSQL text cannot hold NUL; the rest of the message is still worth answering.
            msg = _without_nul(msg)
        channel = msg.channel
        ch = channels.name(channel)
        inbound = await store.find_inbound(self.pool, channel, msg.channel_message_id)
        if inbound is not None and inbound.state == "replied":
            metrics.MESSAGES.labels(ch, "duplicate").inc()
            return "duplicate"
        context = reply_context(msg)
        if channel == C.CHANNEL_WEB_FORM and msg.web_form.follow_up:
            # Typed on the ticket's status page: the ticket's customer, the ticket's way back.
            customer, context = await self._follow_up(msg.web_form.ticket_reference)
        else:
            customer = await self._resolve(msg)
        allowed = channels.history_channels(customer, channel)
        if inbound is None:
            inbound = await store.record_inbound(
                self.pool,
                store.NewInbound(
                    channel=channel,
                    channel_message_id=msg.channel_message_id,
                    customer=customer.name,
                    text=msg.text_body,
                    subject=msg.subject,
                    received_time=msg.received_time.ToDatetime(tzinfo=UTC),
                    ticket_reference=msg.web_form.ticket_reference if channel == C.CHANNEL_WEB_FORM else "",
                    category=msg.web_form.category,
                    priority=msg.web_form.priority,
                    reply_context=context,
                    allowed_channels=allowed,
                ),
                self.conversation_idle,
            )
        request_id = reply_request_id(channel, msg.channel_message_id)
        if inbound.state == "received":
            decision = await self._decide(msg, inbound, customer, allowed)
            await store.record_decision(
                self.pool,
                inbound,
                store.DecisionRecord(
                    status=_status_for(decision, inbound),
                    sentiment=decision.sentiment,
                    category=decision.category,
                    priority=decision.priority,
                    escalation_reason=decision.escalation_reason if decision.action == Action.ESCALATE else 0,
                    escalation_detail=decision.escalation_detail if decision.action == Action.ESCALATE else "",
                    reply_text=decision.reply_text,
                    request_id=request_id,
                    decision=decision.to_json(),
                    follow_up_by=(
                        datetime.fromisoformat(decision.follow_up_by)
                        if decision.action == Action.ESCALATE and decision.follow_up_by
                        else None
                    ),
                ),
            )
            metrics.SENTIMENT.labels(ch).observe(decision.sentiment)
            inbound = dataclasses.replace(
                inbound,
                state="decided",
                decision=decision.to_json(),
                reply_text=decision.reply_text,
                reply_request_id=request_id,
            )
        decision_json = inbound.decision or {}
        if decision_json.get("action") == Action.ESCALATE:
            await self._publish_escalation(msg, inbound, decision_json, request_id)
        reply = await self.notifier.SendMessage(
            send_request_from_context(request_id, channel, context, inbound.reply_text or "", inbound.ticket_id)
        )
        first = await store.record_sent(self.pool, inbound, request_id, reply.delivery.name, reply.delivery.status)
        action = decision_json.get("action", "answer")
        metrics.REPLIES.labels(ch, action).inc()
        metrics.MESSAGES.labels(ch, "replied").inc()
        if action in (Action.ANSWER, Action.CLOSE):
            metrics.RESOLVED.labels(ch).inc()
        elif action == Action.ESCALATE:
            metrics.ESCALATIONS.labels(decision_json.get("escalation_reason_name", "unknown")).inc()
        if first is not None:
            started = msg.received_time.ToDatetime(tzinfo=UTC)
            metrics.FIRST_RESPONSE.labels(ch).observe(max(0.0, (first - started).total_seconds()))
        # Best effort, after the reply so it never delays it. A redelivery of a decided message
        # comes here again and the gap's request id records it once.
        await self._record_knowledge_gap(msg, inbound, decision_json)
        return "replied"

    async def _record_knowledge_gap(
        self, msg: message_events_pb2.MessageReceived, inbound: store.Inbound, decision: dict[str, Any]
    ) -> None:
        """Best effort: a failure is logged and counted, and never fails or retries the message."""
        gap = knowledge_gap(decision, self.gap_below)
        if gap is None:
            return
        outcome, candidates = gap
        kind = "no_answer_found" if outcome == knowledge_pb2.KnowledgeGap.OUTCOME_NO_ANSWER_FOUND else "low_confidence"
        try:
            await self.searcher.record_gap(
                question=" ".join(f"{msg.subject}\n{msg.text_body}".split()),
                language=decision.get("language", ""),
                channel=msg.channel,
                ticket=f"tickets/{inbound.ticket_id}",
                outcome=outcome,
                candidates=candidates,
                request_id=gap_request_id(msg.channel, msg.channel_message_id),
            )
        except Exception as exc:
            metrics.KNOWLEDGE_GAPS.labels(kind, "failed").inc()
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            log.warning("knowledge gap not recorded", extra={"ticket": inbound.ticket_id, "error": code})
            return
        metrics.KNOWLEDGE_GAPS.labels(kind, "recorded").inc()

    async def _follow_up(self, reference: str) -> tuple[identity_pb2.Customer, dict[str, Any]]:
        ticket = await store.get_ticket(self.pool, reference)
        if ticket is None:
            raise PoisonRecord("a status-page follow-up names no known ticket")
        first = await store.latest_inbound_of_ticket(self.pool, ticket.id)
        reply = await self.identity.GetCustomer(identity_service_pb2.GetCustomerRequest(name=ticket.customer))
        return reply.customer, dict(first.reply_context) if first is not None else {}

    async def _resolve(self, msg: message_events_pb2.MessageReceived) -> identity_pb2.Customer:
        try:
            reply = await self.identity.ResolveCustomer(
                identity_service_pb2.ResolveCustomerRequest(
                    channel=msg.channel,
                    identifiers=channels.identifiers(msg),
                    display_name=msg.display_name[:200],
                    sender_authenticated=msg.channel == C.CHANNEL_EMAIL and msg.sender.email_authenticated,
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise PoisonRecord(f"identity rejected the sender: {exc.details()}") from exc
            raise
        return reply.customer

    async def _decide(
        self,
        msg: message_events_pb2.MessageReceived,
        inbound: store.Inbound,
        resolved: identity_pb2.Customer,
        allowed: list[int],
    ) -> Decision:
        """The reply: a code sent back is answered with the verification's outcome alone (the
        reasoner and the engine never see it); otherwise the usual decision, with an offer to
        connect the conversations when the message claims an identifier."""
        assessment = await self.reasoner.assess(msg.text_body, msg.subject)
        voice = self.reasoner.voice(assessment.language)
        code = verification.code_in(msg.text_body)
        if code:
            # Six digits have no language: answer in the one the conversation was held in.
            language = await store.last_language(self.pool, resolved.name) or assessment.language
            voice = self.reasoner.voice(language)
            assessment = dataclasses.replace(assessment, language=language)
            completed = await self.verifier.complete(resolved, code, voice)
            return Decision(
                action=Action.VERIFY,
                reply_text=completed.text,
                engine="policy",
                language=assessment.language,
                sentiment=0.0,
                category=msg.web_form.category or C.CATEGORY_GENERAL,
                priority=msg.web_form.priority or C.PRIORITY_LOW,
                intent="verification",
                evidence={"verification": completed.outcome},
            )
        decision = await self._reason(msg, inbound, resolved.name, allowed, assessment)
        before: set[tuple[int, str]] = {(i.kind, i.value) for i in resolved.identifiers}
        typed: set[tuple[int, str]] = (
            {(int(i.kind), i.value) for i in resolved.identifiers if not i.verified}
            if msg.channel == C.CHANNEL_WEB_FORM
            else set()
        )
        customer = await self.verifier.claim(resolved, msg)
        written = {(int(i.kind), i.value) for i in customer.identifiers if not i.verified} - before
        written |= verification.mention_keys(msg.text_body)
        if not typed and not written:
            return decision
        wanted = [f"whatsapp:{v}" for k, v in typed | written if k == identity_pb2.IDENTIFIER_KIND_PHONE]
        last = await store.last_whatsapp_times(self.pool, wanted) if wanted else {}
        offer = await self.verifier.offer(customer, msg, voice, typed=typed, written=written, last_whatsapp=last)
        if not offer:
            return decision
        return dataclasses.replace(decision, reply_text=f"{decision.reply_text}\n\n{offer}")

    async def _reason(
        self,
        msg: message_events_pb2.MessageReceived,
        inbound: store.Inbound,
        customer: str,
        allowed: list[int],
        assessment: policy.Assessment,
    ) -> Decision:
        request = Request(
            ticket_id=inbound.ticket_id,
            channel=msg.channel,
            text=msg.text_body,
            subject=msg.subject,
            display_name=msg.display_name,
            customer=customer,
            new_ticket=inbound.new_ticket,
        )

        async def history(limit: int) -> list[dict[str, Any]]:
            rows = await store.customer_messages(self.pool, customer, inbound.message_id, limit, allowed)
            return _history(rows)

        tools = Toolbox(request, self.searcher, history, assessment.language, (assessment.text, assessment.vectors))
        waiting = inbound.ticket_status == store.STATUS_ESCALATED and not inbound.new_ticket
        return await self.reasoner.decide(tools, assessment, waiting_for_person=waiting)

    async def draft_reply(self, ticket: store.TicketRow, message: store.MessageRow) -> Draft | None:
        """A suggested reply to the ticket's customer `message`, for staff (never sent here): the
        same reading, knowledge search and engine as an answer of the agent's own. History is the
        ticket's own channel only (no link is assumed verified here)."""
        request = Request(
            ticket_id=ticket.id,
            channel=ticket.channel,
            text=message.text,
            subject=ticket.subject,
            display_name="",
            customer=ticket.customer,
            new_ticket=False,
        )

        async def history(limit: int) -> list[dict[str, Any]]:
            rows = await store.customer_messages(self.pool, ticket.customer, message.id, limit, [ticket.channel])
            return _history(rows)

        assessment = await self.reasoner.assess(message.text, ticket.subject)
        tools = Toolbox(request, self.searcher, history, assessment.language, (assessment.text, assessment.vectors))
        return await self.reasoner.draft(tools, assessment)

    async def _publish_escalation(
        self, msg: message_events_pb2.MessageReceived, inbound: store.Inbound, decision: dict[str, Any], request_id: str
    ) -> None:
        now = datetime.now(UTC)
        event = ticket_events_pb2.TicketEscalated(
            ticket=f"tickets/{inbound.ticket_id}",
            customer=inbound.customer,
            channel=msg.channel,
            reason=decision.get("escalation_reason", 0),
            reason_detail=decision.get("escalation_detail", ""),
            summary=_summary(msg, decision),
            priority=decision.get("priority", 0),
            escalated_time=_ts(now),
        )
        if decision.get("follow_up_by"):
            event.follow_up_by_time.CopyFrom(_ts(datetime.fromisoformat(decision["follow_up_by"])))
        # The event id is derived from the message: a retried publish is recognisably the same event.
        await self.publisher.publish(
            topics.TICKETS_ESCALATED, event, key=inbound.ticket_id, event_id=f"{request_id}-escalated"
        )


def _history(rows: list[store.MessageRow]) -> list[dict[str, Any]]:
    """Earlier messages as an engine's history tool shows them."""
    return [
        {
            "channel": channels.name(r.channel),
            "author": "customer" if r.author == agent_pb2.AUTHOR_CUSTOMER else "support",
            "text": r.text[:500],
            "time": r.create_time.isoformat(),
        }
        for r in rows
    ]


def _without_nul(msg: message_events_pb2.MessageReceived) -> message_events_pb2.MessageReceived:
    clean = message_events_pb2.MessageReceived()
    clean.CopyFrom(msg)
    clean.text_body = msg.text_body.replace("\x00", "")
    clean.subject = msg.subject.replace("\x00", "")
    clean.display_name = msg.display_name.replace("\x00", "")
    return clean


def _status_for(decision: Decision, inbound: store.Inbound) -> int:
    if decision.action == Action.ESCALATE:
        return store.STATUS_ESCALATED
    if decision.action == Action.ACKNOWLEDGE:
        return inbound.ticket_status if inbound.ticket_status != store.STATUS_OPEN else store.STATUS_ESCALATED
    if decision.action == Action.VERIFY:
        # A code alone on a new ticket is done once answered; on an open ticket nothing changes.
        return store.STATUS_RESOLVED if inbound.new_ticket else inbound.ticket_status
    if decision.action in (Action.GREET, Action.CLARIFY):
        # Nothing answered yet: the ticket waits for the customer's question.
        return store.STATUS_OPEN
    return store.STATUS_RESOLVED


def _summary(msg: message_events_pb2.MessageReceived, decision: dict[str, Any]) -> str:
    """For the person picking it up: what the customer asked and what the agent saw. Customer text
    is quoted as data; no internals."""
    subject = msg.subject.strip()
    excerpt = " ".join(msg.text_body.split())[:400]
    parts = [f"{channels.name(msg.channel)} message"]
    if subject:
        parts.append(f'subject "{subject[:120]}"')
    parts.append(f"language {decision.get('language', '?')}, sentiment {decision.get('sentiment', 0):.2f}")
    return "; ".join(parts) + f'. Customer wrote: "{excerpt}"'
