"""AgentService over gRPC: tickets with filters, pagination and etags, messages, customer
history, human replies through the notifier, escalate, resolve, and per-method scopes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from agent_helpers import message  # type: ignore[import-not-found]
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_runtime.errors import error_info
from fte_runtime.grpc_client import connect
from google.protobuf.field_mask_pb2 import FieldMask

pytestmark = pytest.mark.kafka


def reason_of(err: grpc.aio.AioRpcError) -> str:
    info = error_info(err)
    assert info is not None
    return str(info.reason)


@pytest.fixture
async def api(start_agent: Any, mesh: Any, tokens: dict[str, str]) -> Any:
    agent = await start_agent()
    channels = {p: connect(f"127.0.0.1:{agent.port}", token=tokens[p], default_timeout=10) for p in tokens}
    notifier_channel = connect(mesh.notifier, token=tokens["staff"], default_timeout=10)
    stubs = {p: agent_service_pb2_grpc.AgentServiceStub(ch) for p, ch in channels.items()}
    yield agent, stubs, notifier_service_pb2_grpc.NotifierServiceStub(notifier_channel)
    for ch in [*channels.values(), notifier_channel]:
        await ch.close()


async def test_list_filter_paginate_update_reply_escalate_resolve(api: Any) -> None:
    agent, stubs, notifier = api
    staff = stubs["staff"]
    processor = agent.agent.processor
    answered = [message("email", q) for q in ("How do I reset my password?", "How do I connect Slack?")]
    answered += [message("whatsapp", "how do i export all workspace data?")]
    escalated = [message("web_form", "I want a refund for last month", subject="Refund")]
    for msg, _ in answered + escalated:
        assert await processor.handle(msg) == "replied"

    # Pagination: every ticket exactly once, newest first.
    seen: list[str] = []
    token = ""
    while True:
        page = await staff.ListTickets(agent_service_pb2.ListTicketsRequest(page_size=1, page_token=token))
        seen += [t.name for t in page.tickets]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4
    by_filter = await staff.ListTickets(
        agent_service_pb2.ListTicketsRequest(escalation_reason=common_pb2.ESCALATION_REASON_REFUND)
    )
    assert [t.name for t in by_filter.tickets] == [f"tickets/{escalated[0][0].web_form.ticket_reference}"]
    wa = await staff.ListTickets(agent_service_pb2.ListTicketsRequest(channel=common_pb2.CHANNEL_WHATSAPP))
    assert len(wa.tickets) == 1
    resolved = await staff.ListTickets(agent_service_pb2.ListTicketsRequest(status=agent_pb2.TICKET_STATUS_RESOLVED))
    assert len(resolved.tickets) == 3
    first = await staff.ListTickets(agent_service_pb2.ListTicketsRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.ListTickets(
            agent_service_pb2.ListTicketsRequest(
                page_size=1, page_token=first.next_page_token, channel=common_pb2.CHANNEL_EMAIL
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "INVALID_PAGE_TOKEN"

    # Due times: the escalation's promise, brought into support hours; none once resolved.
    ticket = by_filter.tickets[0]
    promise = ticket.follow_up_by_time.ToDatetime(UTC)
    due = ticket.reply_due_time.ToDatetime(UTC)
    created = ticket.create_time.ToDatetime(UTC)
    assert timedelta(hours=23) < promise - created < timedelta(hours=25)  # the playbook's 24 hours
    assert due == agent.agent.processor.reasoner.playbook.hours.reply_due(promise - timedelta(hours=24), promise)
    assert created < due <= promise
    assert all(not t.HasField("reply_due_time") for t in resolved.tickets)

    # Update with etags.
    updated = await staff.UpdateTicket(
        agent_service_pb2.UpdateTicketRequest(
            ticket=agent_pb2.Ticket(
                name=ticket.name, etag=ticket.etag, assignee="dana", priority=common_pb2.PRIORITY_HIGH
            ),
            update_mask=FieldMask(paths=["assignee", "priority"]),
        )
    )
    assert updated.ticket.assignee == "dana"
    assert updated.ticket.etag != ticket.etag
    mine = await staff.ListTickets(agent_service_pb2.ListTicketsRequest(assignee="dana"))
    assert [t.name for t in mine.tickets] == [ticket.name]
    nobody = await staff.ListTickets(agent_service_pb2.ListTicketsRequest(unassigned=True))
    assert len(nobody.tickets) == 3
    assert ticket.name not in [t.name for t in nobody.tickets]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.ListTickets(agent_service_pb2.ListTicketsRequest(assignee="dana", unassigned=True))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(err.value) == "CONFLICTING_FILTERS"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.UpdateTicket(
            agent_service_pb2.UpdateTicketRequest(
                ticket=agent_pb2.Ticket(name=ticket.name, etag=ticket.etag, assignee="eve"),
                update_mask=FieldMask(paths=["assignee"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(err.value) == "STALE_ETAG"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.UpdateTicket(
            agent_service_pb2.UpdateTicketRequest(
                ticket=agent_pb2.Ticket(name=ticket.name, etag=updated.ticket.etag),
                update_mask=FieldMask(paths=["customer"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A person replies through the notifier, once per request id.
    req = agent_service_pb2.ReplyToTicketRequest(ticket=ticket.name, text="Hi, I have refunded you.", request_id="r-1")
    first_reply = await staff.ReplyToTicket(req)
    again = await staff.ReplyToTicket(req)
    assert first_reply.message.name == again.message.name
    assert first_reply.message.author == agent_pb2.AUTHOR_HUMAN
    ticket_id = ticket.name.split("/")[1]
    deliveries = await notifier.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket_id))
    assert "Hi, I have refunded you." in [d.text_body for d in deliveries.deliveries]
    assert len(deliveries.deliveries) == 2  # the agent's hand-over and the person's reply
    messages = await staff.ListMessages(agent_service_pb2.ListMessagesRequest(ticket=ticket.name))
    assert [m.author for m in messages.messages] == [
        agent_pb2.AUTHOR_CUSTOMER,
        agent_pb2.AUTHOR_AGENT,
        agent_pb2.AUTHOR_HUMAN,
    ]

    other = resolved.tickets[0]
    esc = await staff.EscalateTicket(agent_service_pb2.EscalateTicketRequest(ticket=other.name, detail="VIP"))
    assert esc.ticket.status == agent_pb2.TICKET_STATUS_ESCALATED
    assert esc.ticket.escalation_reason == common_pb2.ESCALATION_REASON_MANUAL
    staff_promise = esc.ticket.follow_up_by_time.ToDatetime(UTC)
    assert timedelta(hours=23) < staff_promise - datetime.now(UTC) <= timedelta(hours=24)
    assert esc.ticket.HasField("reply_due_time")
    assert esc.ticket.reply_due_time.ToDatetime(UTC) <= staff_promise
    res = await staff.ResolveTicket(agent_service_pb2.ResolveTicketRequest(ticket=other.name, note="done"))
    assert res.ticket.status == agent_pb2.TICKET_STATUS_RESOLVED
    assert res.ticket.resolve_time.seconds > 0

    history = await staff.GetCustomerHistory(agent_service_pb2.GetCustomerHistoryRequest(customer=other.customer))
    assert [t.name for t in history.tickets] == [other.name]
    assert len(history.messages) == 2

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.GetTicket(agent_service_pb2.GetTicketRequest(name="tickets/NOPE"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(err.value) == "TICKET_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.GetTicket(agent_service_pb2.GetTicketRequest(name="customers/1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_scopes(api: Any) -> None:
    agent, stubs, _ = api
    msg, _ = message("email", "How do I reset my password?")
    await agent.agent.processor.handle(msg)
    tickets = await stubs["gateway"].ListTickets(agent_service_pb2.ListTicketsRequest())
    ticket = tickets.tickets[0]
    assert (await stubs["gateway"].GetTicket(agent_service_pb2.GetTicketRequest(name=ticket.name))).ticket == ticket
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs["gateway"].ResolveTicket(agent_service_pb2.ResolveTicketRequest(ticket=ticket.name))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs["kb-reader"].GetTicket(agent_service_pb2.GetTicketRequest(name=ticket.name))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_internal_notes_and_the_actor_of_each_staff_action(api: Any) -> None:
    agent, stubs, notifier = api
    staff = stubs["staff"]
    msg, _ = message("web_form", "I want a refund for last month", subject="Refund")
    assert await agent.agent.processor.handle(msg) == "replied"
    name = f"tickets/{msg.web_form.ticket_reference}"
    ticket_id = msg.web_form.ticket_reference

    note = agent_service_pb2.AddNoteRequest(
        ticket=name, text="Customer is on the annual plan; refund pro rata.", actor="dana", request_id="n-1"
    )
    added = await staff.AddNote(note)
    assert (await staff.AddNote(note)).note.name == added.note.name  # a retry adds it once
    assert added.note.name.startswith(f"{name}/notes/")
    assert (added.note.actor, added.note.principal) == ("dana", "staff")
    await staff.AddNote(agent_service_pb2.AddNoteRequest(ticket=name, text="Second note", actor="eve"))
    listed = await staff.ListNotes(agent_service_pb2.ListNotesRequest(ticket=name, page_size=1))
    assert [n.text for n in listed.notes] == ["Customer is on the annual plan; refund pro rata."]
    rest = await staff.ListNotes(agent_service_pb2.ListNotesRequest(ticket=name, page_token=listed.next_page_token))
    assert [(n.text, n.actor) for n in rest.notes] == [("Second note", "eve")]
    for bad, reason in (
        (agent_service_pb2.AddNoteRequest(ticket=name, text=" "), "INVALID_ARGUMENT"),
        (agent_service_pb2.AddNoteRequest(ticket=name, text="x" * 5001), "INVALID_ARGUMENT"),
        (agent_service_pb2.AddNoteRequest(ticket=name, text="ok", actor="a" * 201), "INVALID_ACTOR"),
        (agent_service_pb2.AddNoteRequest(ticket=name, text="ok", actor="dana\nroot"), "INVALID_ACTOR"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await staff.AddNote(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(err.value) == reason
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs["gateway"].AddNote(agent_service_pb2.AddNoteRequest(ticket=name, text="hi"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Notes never reach the customer: the only deliveries are the agent's and the person's replies.
    reply = await staff.ReplyToTicket(
        agent_service_pb2.ReplyToTicketRequest(ticket=name, text="Refunded.", request_id="r-9", actor="dana")
    )
    assert reply.message.actor == "dana"
    deliveries = await notifier.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket_id))
    texts = [d.text_body for d in deliveries.deliveries]
    assert len(texts) == 2
    assert "Refunded." in texts
    assert not any("annual plan" in t or "Second note" in t for t in texts)

    current = (await staff.GetTicket(agent_service_pb2.GetTicketRequest(name=name))).ticket
    await staff.UpdateTicket(
        agent_service_pb2.UpdateTicketRequest(
            ticket=agent_pb2.Ticket(name=name, etag=current.etag, assignee="dana"),
            update_mask=FieldMask(paths=["assignee"]),
            actor="dana",
        )
    )
    await staff.EscalateTicket(agent_service_pb2.EscalateTicketRequest(ticket=name, actor="eve"))
    await staff.ResolveTicket(agent_service_pb2.ResolveTicketRequest(ticket=name, actor="eve"))
    rows = await agent.agent.pool.fetch(
        "SELECT action, actor, principal, detail FROM staff_actions WHERE ticket_id = $1 ORDER BY id", ticket_id
    )
    assert [(r["action"], r["actor"], r["principal"]) for r in rows] == [
        ("reply", "dana", "staff"),
        ("update", "dana", "staff"),
        ("escalate", "eve", "staff"),
        ("resolve", "eve", "staff"),
    ]
    assert json.loads(rows[1]["detail"]) == {"assignee": "dana"}


async def test_a_suggested_reply_is_drafted_from_the_knowledge_base_and_never_sent(api: Any) -> None:
    agent, stubs, notifier = api
    msg, _ = message("email", "How do I reset my password?")
    assert await agent.agent.processor.handle(msg) == "replied"
    [ticket] = (await stubs["staff"].ListTickets(agent_service_pb2.ListTicketsRequest())).tickets
    ticket_id = ticket.name.removeprefix("tickets/")
    before = await notifier.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket_id))

    draft = await stubs["staff"].SuggestReply(agent_service_pb2.SuggestReplyRequest(ticket=ticket.name))
    assert draft.article.startswith("articles/")
    assert draft.article_url
    assert draft.engine == "offline"
    assert "password" in draft.text.lower()
    # The same answer the agent sent itself (one engine, one way of answering), but for the
    # greeting: a draft does not know the customer's name.
    messages = await stubs["staff"].ListMessages(agent_service_pb2.ListMessagesRequest(ticket=ticket.name))
    assert messages.messages[-1].author == agent_pb2.AUTHOR_AGENT
    greeting, body = draft.text.split("\n", 1)
    assert greeting == "Hi,"
    assert body == messages.messages[-1].text.split("\n", 1)[1]
    after = await notifier.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket_id))
    assert len(after.deliveries) == len(before.deliveries)  # drafting sends nothing
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs["gateway"].SuggestReply(agent_service_pb2.SuggestReplyRequest(ticket=ticket.name))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs["staff"].SuggestReply(agent_service_pb2.SuggestReplyRequest(ticket="tickets/NOPE"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
