"""The dead-letter page of the console in the stack: a poison record the real agent dead-letters is
listed with its error; a customer's message an earlier release could not handle is shown redacted,
replayed from the page once the cause is fixed, answered exactly once, and not sent again without
"again". Only admins reach the page and the replay; every replay needs the form's CSRF token."""

from __future__ import annotations

import asyncio
import html
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_runtime import dlq, envelope
from fte_runtime.grpc_client import connect
from fte_runtime.kafka import dead_letter
from fte_runtime.topics import TICKETS_INCOMING
from fte_stack.stack import Stack
from test_console_stack import add_user, csrf, new_phone, sign_in  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka
T = TypeVar("T")
ROW = re.compile(r'<tr data-record="fte\.tickets\.incoming/(\d+):(\d+)"')


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


@pytest.fixture
async def clients(full_stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """An admin's and an agent's signed-in console sessions."""
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as admin,
        httpx.AsyncClient(base_url=base, timeout=30) as agent,
    ):
        for client, role in ((admin, "admin"), (agent, "agent")):
            name = f"dlq-{role}-{uuid.uuid4().hex[:8]}"
            await add_user(full_stack, name, role)
            assert (await sign_in(client, name)).status_code == 303
        yield admin, agent


def whatsapp_message(phone: str, text: str) -> tuple[message_events_pb2.MessageReceived, bytes]:
    """A MessageReceived as the gateway publishes it for a WhatsApp message, and its record key."""
    msg = message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WHATSAPP,
        channel_message_id=f"SM{uuid.uuid4().hex}",
        display_name="Rosa Diaz",
        text_body=text,
    )
    msg.received_time.FromDatetime(datetime.now(UTC))
    msg.sender.whatsapp_address = f"whatsapp:{phone}"
    msg.sender.phone = phone
    return msg, msg.sender.whatsapp_address.encode()


async def find_row(console: httpx.AsyncClient, event_id: str, timeout: float = 60) -> tuple[str, str]:
    """The listed row (partition, offset) of the incoming DLQ record with CloudEvents id `event_id`,
    and the list page; the record page shows the headers."""

    async def check() -> tuple[str, str, str] | None:
        page = await console.get("/deadletters?topic=fte.tickets.incoming")
        assert page.status_code == 200, page.text
        for partition, offset in ROW.findall(page.text):
            shown = await console.get(f"/deadletters/fte.tickets.incoming/{partition}/{offset}")
            if html.escape(event_id) in shown.text:
                return partition, offset, page.text
        return None

    partition, offset, page = await eventually(check, timeout, f"dead letter {event_id} on the page")
    return f"{partition}:{offset}", page


def row_of(page: str, position: str) -> str:
    match = re.search(rf'<tr data-record="fte\.tickets\.incoming/{position}"[^>]*>(.*?)</tr>', page, re.S)
    assert match, f"no row {position}"
    return match.group(1)


async def answers(stack: Stack, phone: str) -> tuple[list[agent_pb2.Message], int]:
    """The messages of the customer's tickets and the notifier's deliveries to them."""
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        found = await identity.ListCustomers(
            identity_service_pb2.ListCustomersRequest(
                identifier=identity_service_pb2.IdentifierInput(
                    kind=identity_pb2.IDENTIFIER_KIND_WHATSAPP, value=f"whatsapp:{phone}"
                )
            )
        )
        if not found.customers:
            return [], 0
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        notifier = notifier_service_pb2_grpc.NotifierServiceStub(channel)
        tickets = await agent.ListTickets(agent_service_pb2.ListTicketsRequest(customer=found.customers[0].name))
        messages: list[agent_pb2.Message] = []
        deliveries = 0
        for ticket in tickets.tickets:
            listed = await agent.ListMessages(agent_service_pb2.ListMessagesRequest(ticket=ticket.name, page_size=100))
            messages += listed.messages
            sent = await notifier.ListDeliveries(
                notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket.name.removeprefix("tickets/"))
            )
            deliveries += len(sent.deliveries)
    return messages, deliveries


def replies(messages: list[agent_pb2.Message]) -> list[agent_pb2.Message]:
    return [m for m in messages if m.author == agent_pb2.AUTHOR_AGENT]


async def replay(console: httpx.AsyncClient, page: str, position: str, **extra: str) -> httpx.Response:
    form = {"csrf_token": csrf(page), "topic": TICKETS_INCOMING, "record": position, **extra}
    return await console.post("/deadletters/replay", data=form)


@pytest.mark.timeout(600)
async def test_a_dead_letter_is_listed_shown_redacted_and_replayed_from_the_console_once(
    full_stack: Stack, clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    admin, agent = clients
    producer = AIOKafkaProducer(bootstrap_servers=full_stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # A poison record: the real agent cannot handle a message without text and dead-letters it.
        poison, poison_key = whatsapp_message(new_phone(), " ")
        value, headers = envelope.encode(poison, source="//gateway.test")
        poison_id = _ce_id(headers)
        await producer.send_and_wait(TICKETS_INCOMING, value=value, key=poison_key, headers=headers)
        position, page = await find_row(admin, poison_id)
        row = row_of(page, position)
        assert "invalid MessageReceived: text_body or subject is required" in row
        assert "fte.events.v1.MessageReceived" in row
        assert re.search(r"fte\.tickets\.incoming \d+:\d+", row), row  # where it was consumed from
        assert "waiting" in row

        # A customer's message an earlier release could not handle, as the runtime dead-letters it.
        phone = new_phone()
        text = f"How do I reset my password? ({uuid.uuid4().hex[:6]})"
        msg, key = whatsapp_message(phone, text)
        value, headers = envelope.encode(msg, source="//gateway.test")
        failed = ConsumerRecord(TICKETS_INCOMING, 0, 7, 0, 0, key, value, None, len(key), len(value), headers)
        error = "PoisonRecord: identity rejected the sender (since fixed)"
        await dead_letter(producer, failed, error)
    finally:
        await producer.stop()

    position, page = await find_row(admin, _ce_id(headers))
    assert error in row_of(page, position)
    assert 'href="/deadletters"' in page  # in the admin's navigation
    partition, offset = position.split(":")
    ref = f"fte.tickets.incoming.dlq/{partition}/{offset}"
    shown = await admin.get(f"/deadletters/fte.tickets.incoming/{partition}/{offset}")
    assert shown.status_code == 200
    assert text not in shown.text  # the customer's words and number are masked
    assert phone not in shown.text
    assert f"&lt;redacted, {len(text)} characters&gt;" in shown.text
    assert msg.channel_message_id in shown.text  # ids stay, to find it
    assert 'id="dlq-state">waiting' in shown.text

    # Staff who are not admins see neither the page nor the record, and cannot replay.
    assert (await agent.get("/deadletters")).status_code == 403
    assert (await agent.get(f"/deadletters/fte.tickets.incoming/{partition}/{offset}")).status_code == 403
    agent_page = (await agent.get("/")).text
    assert 'href="/deadletters"' not in agent_page
    assert (await replay(agent, agent_page, position)).status_code == 403
    # A replay without the form's CSRF token is refused.
    forged = await admin.post("/deadletters/replay", data={"topic": TICKETS_INCOMING, "record": position})
    assert forged.status_code == 403
    assert not [e for e in await dlq.read_audit(full_stack.kafka_bootstrap) if e["dead_letter"] == ref]

    # The cause is fixed: replayed from the page, the message is answered once.
    done = await replay(admin, page, position)
    assert done.status_code == 200, done.text
    assert re.search(rf"{re.escape(ref)}:\s*sent to fte\.tickets\.incoming/\d+/\d+", done.text)

    async def answered() -> tuple[list[agent_pb2.Message], int] | None:
        messages, deliveries = await answers(full_stack, phone)
        return (messages, deliveries) if replies(messages) and deliveries else None

    messages, deliveries = await eventually(answered, 120, "an answer to the replayed message")
    assert [m.text for m in messages if m.author == agent_pb2.AUTHOR_CUSTOMER] == [text]
    assert (len(replies(messages)), deliveries) == (1, 1)

    # A second replay without "again" sends nothing; the page says so and the record is marked.
    listed = (await admin.get("/deadletters?topic=fte.tickets.incoming")).text
    assert "replayed" in row_of(listed, position)
    again = await replay(admin, listed, position)
    assert again.status_code == 200
    assert "replayed before; not sent again" in again.text
    audit = [e for e in await dlq.read_audit(full_stack.kafka_bootstrap) if e["dead_letter"] == ref]
    assert len(audit) == 1
    assert audit[0]["actor"].startswith("dlq-admin-")
    assert audit[0]["error"] == error
    # The console's own audit log has both, by the signed-in admin.
    db = await asyncpg.connect(full_stack.postgres.dsn())
    try:
        rows = await db.fetch("SELECT actor, action FROM console.audit_log WHERE target = $1 ORDER BY id", ref)
    finally:
        await db.close()
    assert [r["action"] for r in rows] == ["dlq_replay", "dlq_replay_skipped"]
    assert {r["actor"] for r in rows} == {audit[0]["actor"]}


def _ce_id(headers: list[tuple[str, bytes]]) -> str:
    return next(v.decode() for k, v in headers if k == "ce_id")


async def test_the_trace_page_is_for_admins_and_says_when_tracing_is_off(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    admin, agent = clients
    assert (await agent.get("/traces")).status_code == 403
    page = await admin.get("/traces", params={"correlation_id": "abc-123"})
    assert page.status_code == 200
    assert 'id="traces-off"' in page.text  # this stack runs without Jaeger
    assert 'href="/traces"' in page.text
