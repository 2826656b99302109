"""The worker against the real broker, PostgreSQL and the real knowledge, identity and notifier
services: replies per channel, de-duplication, poison events, order, escalations, resumption."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import pytest
from agent_helpers import eventually, message, publish  # type: ignore[import-not-found]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.events.v1 import ticket_events_pb2
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_agent.processor import reply_request_id
from fte_agent.server import RunningAgent
from fte_runtime import dlq, envelope, topics
from fte_runtime.grpc_client import connect
from fte_runtime.kafka import dead_letter
from fte_runtime.settings import KafkaSettings

pytestmark = pytest.mark.kafka


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> Any:
    p = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, acks="all")
    await p.start()
    yield p
    await p.stop()


class Clients:
    def __init__(self, agent: RunningAgent, mesh: Any, tokens: dict[str, str]) -> None:
        self.agent_channel = connect(f"127.0.0.1:{agent.port}", token=tokens["staff"], default_timeout=10)
        self.notifier_channel = connect(mesh.notifier, token=tokens["staff"], default_timeout=10)
        self.agent = agent_service_pb2_grpc.AgentServiceStub(self.agent_channel)
        self.notifier = notifier_service_pb2_grpc.NotifierServiceStub(self.notifier_channel)

    async def close(self) -> None:
        await self.agent_channel.close()
        await self.notifier_channel.close()

    async def tickets(self, **filters: Any) -> list[agent_pb2.Ticket]:
        reply = await self.agent.ListTickets(agent_service_pb2.ListTicketsRequest(page_size=100, **filters))
        return list(reply.tickets)

    async def messages(self, ticket: str) -> list[agent_pb2.Message]:
        reply = await self.agent.ListMessages(agent_service_pb2.ListMessagesRequest(ticket=ticket, page_size=100))
        return list(reply.messages)

    async def deliveries(self, ticket_name: str) -> list[Any]:
        ticket_id = ticket_name.split("/", 1)[1]
        reply = await self.notifier.ListDeliveries(
            notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket_id, page_size=100)
        )
        return list(reply.deliveries)


@pytest.fixture
async def running(start_agent: Any, mesh: Any, tokens: dict[str, str]) -> Any:
    agent = await start_agent()
    clients = Clients(agent, mesh, tokens)
    yield agent, clients
    await clients.close()


async def _replied(clients: Clients, ticket: str) -> agent_pb2.Message | None:
    for m in await clients.messages(ticket):
        if m.author == agent_pb2.AUTHOR_AGENT and m.delivery:
            return m
    return None


async def test_one_reply_per_channel_with_delivery_status(running: Any, producer: AIOKafkaProducer) -> None:
    agent, clients = running
    topic = agent.agent.settings.incoming_topic
    sent = {
        "email": message("email", "How do I reset my password? I forgot it.", subject="Forgot password"),
        "whatsapp": message("whatsapp", "how do i invite my teammates to our workspace?"),
        "web_form": message("web_form", "Which browsers are supported?", subject="Browsers"),
    }
    for msg, key in sent.values():
        await publish(producer, topic, msg, key)
    web_ref = sent["web_form"][0].web_form.ticket_reference

    async def all_tickets() -> list[agent_pb2.Ticket] | None:
        tickets = await clients.tickets()
        return tickets if len(tickets) == 3 and all(t.first_response_time.seconds for t in tickets) else None

    tickets = await eventually(all_tickets, what="three answered tickets")
    by_channel = {t.channel: t for t in tickets}
    assert by_channel[common_pb2.CHANNEL_WEB_FORM].name == f"tickets/{web_ref}"
    for ticket in tickets:
        assert ticket.status == agent_pb2.TICKET_STATUS_RESOLVED
        reply = await _replied(clients, ticket.name)
        assert reply is not None
        deliveries = await clients.deliveries(ticket.name)
        assert len(deliveries) == 1
        assert deliveries[0].text_body == reply.text
        assert "https://help.tasklane.example/articles/" in reply.text

        # ReplyDelivered from the notifier moves the stored reply to SENT.
        async def sent_status(name: str = ticket.name) -> bool:
            r = await _replied(clients, name)
            return r is not None and r.delivery_status >= common_pb2.DELIVERY_STATUS_SENT

        await eventually(sent_status, what="delivery status from the outcome event")
    email_delivery = (await clients.deliveries(by_channel[common_pb2.CHANNEL_EMAIL].name))[0]
    assert email_delivery.subject == "Forgot password"
    wa = (await clients.deliveries(by_channel[common_pb2.CHANNEL_WHATSAPP].name))[0]
    assert wa.recipient.startswith("whatsapp:+")
    assert len(wa.text_body) <= 300


async def test_duplicate_is_answered_once_and_poison_goes_to_the_dlq(
    running: Any, producer: AIOKafkaProducer, kafka_settings: KafkaSettings
) -> None:
    agent, clients = running
    topic = agent.agent.settings.incoming_topic
    msg, key = message("email", "How do I export a project to Excel?", subject="Export")
    await publish(producer, topic, msg, key)
    await publish(producer, topic, msg, key)  # the same provider message id again
    # Poison: not a CloudEvent, and a valid envelope with missing required fields.
    await producer.send_and_wait(topic, value=b"\x00garbage", key=key.encode())
    bad, _ = message("email", "hello")
    bad.ClearField("channel_message_id")
    await publish(producer, topic, bad, key)
    after, _ = message("email", "How do I turn on two-factor authentication?", who=key.split("@")[0])
    await publish(producer, topic, after, key)

    async def two_tickets() -> list[agent_pb2.Ticket] | None:
        tickets = await clients.tickets()
        done = [t for t in tickets if t.first_response_time.seconds]
        return tickets if len(done) == 2 else None

    tickets = await eventually(two_tickets, what="both real messages answered")
    assert len(tickets) == 2
    for ticket in tickets:
        replies = [m for m in await clients.messages(ticket.name) if m.author == agent_pb2.AUTHOR_AGENT]
        assert len(replies) == 1
        assert len(await clients.deliveries(ticket.name)) == 1

    dlq = AIOKafkaConsumer(
        topics.dead_letter_topic(topic),
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"dlq-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await dlq.start()
    try:
        errors: list[str] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(errors) < 2 and asyncio.get_running_loop().time() < deadline:
            for records in (await dlq.getmany(timeout_ms=500)).values():
                errors += [dict(r.headers)["dlq_error"].decode() for r in records]
    finally:
        await dlq.stop()
    assert len(errors) == 2
    assert any("InvalidEvent" in e for e in errors)
    assert any("channel_message_id is required" in e for e in errors)


async def test_one_customer_in_order_many_customers_at_once(running: Any, producer: AIOKafkaProducer) -> None:
    agent, clients = running
    topic = agent.agent.settings.incoming_topic
    questions = [
        "How do I reset my password?",
        "How do I export a project to CSV?",
        "How do I connect Slack?",
        "Which browsers are supported?",
    ]
    customers = [f"cust{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    for q in questions:
        for who in customers:
            msg, key = message("email", q, who=who)
            await publish(producer, topic, msg, key)

    async def answered() -> list[agent_pb2.Ticket] | None:
        tickets = await clients.tickets()
        done = [t for t in tickets if t.first_response_time.seconds]
        return tickets if len(done) == len(questions) * len(customers) else None

    tickets = await eventually(answered, timeout=60, what="24 answered tickets")
    by_customer: dict[str, list[agent_pb2.Ticket]] = {}
    for t in tickets:
        by_customer.setdefault(t.customer, []).append(t)
    assert len(by_customer) == len(customers)
    for own in by_customer.values():
        # Each customer's tickets were opened in the order the messages were sent.
        own.sort(key=lambda t: (t.create_time.seconds, t.create_time.nanos))
        subjects = [t.subject for t in own]
        assert subjects == questions
        # ... and continue one conversation.
        assert len({t.conversation for t in own}) == 1


async def _watch_escalations(kafka_settings: KafkaSettings) -> AIOKafkaConsumer:
    watcher = AIOKafkaConsumer(
        topics.TICKETS_ESCALATED,
        bootstrap_servers=kafka_settings.kafka_bootstrap,
        auto_offset_reset="latest",
        group_id=f"esc-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await watcher.start()
    await eventually(lambda: asyncio.sleep(0, result=bool(watcher.assignment())), what="assignment")
    return watcher


async def _escalations(
    watcher: AIOKafkaConsumer, ticket: str, *, want: int
) -> list[tuple[envelope.Event, ticket_events_pb2.TicketEscalated]]:
    """The TicketEscalated events of `ticket`, until `want` came or 20 s passed."""
    events: list[tuple[envelope.Event, ticket_events_pb2.TicketEscalated]] = []
    deadline = asyncio.get_running_loop().time() + 20
    while len(events) < want and asyncio.get_running_loop().time() < deadline:
        for records in (await watcher.getmany(timeout_ms=500)).values():
            for r in records:
                ev = envelope.decode(r.value, r.headers, envelope.type_map(ticket_events_pb2.TicketEscalated))
                assert isinstance(ev.message, ticket_events_pb2.TicketEscalated)
                if ev.message.ticket == ticket:
                    events.append((ev, ev.message))
    return events


async def test_escalation_is_published_and_told_honestly(
    running: Any, producer: AIOKafkaProducer, kafka_settings: KafkaSettings
) -> None:
    agent, clients = running
    topic = agent.agent.settings.incoming_topic
    watcher = await _watch_escalations(kafka_settings)
    try:
        msg, key = message("whatsapp", "I was charged twice this month, I want a refund")
        await publish(producer, topic, msg, key)
        ticket = await eventually(
            lambda: _first_ticket(clients, status=agent_pb2.TICKET_STATUS_ESCALATED), what="escalated ticket"
        )
        assert ticket.escalation_reason == common_pb2.ESCALATION_REASON_REFUND
        reply = await eventually(lambda: _replied(clients, ticket.name), what="the hand-over reply")
        assert "billing team" in reply.text
        assert ticket.name.split("/")[1] in reply.text
        events = [m for _, m in await _escalations(watcher, ticket.name, want=1)]
        assert len(events) == 1
        assert events[0].reason == common_pb2.ESCALATION_REASON_REFUND
        assert events[0].follow_up_by_time.seconds > events[0].escalated_time.seconds
        assert "refund" in events[0].summary
    finally:
        await watcher.stop()


async def test_a_retried_staff_escalation_publishes_the_same_event_id(
    running: Any, producer: AIOKafkaProducer, kafka_settings: KafkaSettings
) -> None:
    """EscalateTicket's request_id: the retry's TicketEscalated carries the first one's ce_id
    (consumers drop the copy), and the agent's events name it as `agent.fte`."""
    agent, clients = running
    msg, key = message("web_form", "How do I export my tasks to CSV?", subject="Export")
    await publish(producer, agent.agent.settings.incoming_topic, msg, key)
    ticket = await eventually(lambda: _first_ticket(clients), what="a ticket")
    watcher = await _watch_escalations(kafka_settings)
    try:
        request = agent_service_pb2.EscalateTicketRequest(ticket=ticket.name, detail="VIP", request_id="esc-1")
        for _ in range(2):
            await clients.agent.EscalateTicket(request)
        events = [ev for ev, _ in await _escalations(watcher, ticket.name, want=2)]
        assert len(events) == 2
        assert events[0].id == events[1].id
        assert events[0].source == "agent.fte"
    finally:
        await watcher.stop()


async def _first_ticket(clients: Clients, **filters: Any) -> agent_pb2.Ticket | None:
    tickets = await clients.tickets(**filters)
    return tickets[0] if tickets else None


async def test_a_crash_after_deciding_resends_with_the_same_request_id(running: Any) -> None:
    """Resuming a message whose reply was stored but whose send was not recorded: the notifier
    gets the same request id and delivers once."""
    agent, clients = running
    processor = agent.agent.processor
    msg, _ = message("web_form", "How do I connect GitHub?", subject="GitHub")
    assert await processor.handle(msg) == "replied"
    ticket = f"tickets/{msg.web_form.ticket_reference}"
    # Wind the stored state back to "decided", as if the worker died right after storing the reply.
    await agent.agent.pool.execute(
        "UPDATE inbound SET state = 'decided' WHERE channel_message_id = $1", msg.channel_message_id
    )
    assert await processor.handle(msg) == "replied"
    assert await processor.handle(msg) == "duplicate"
    deliveries = await clients.deliveries(ticket)
    assert len(deliveries) == 1
    assert deliveries[0].request_id == reply_request_id(msg.channel, msg.channel_message_id)
    replies = [m for m in await clients.messages(ticket) if m.author == agent_pb2.AUTHOR_AGENT]
    assert len(replies) == 1


async def test_erasure_and_merge_events(start_agent: Any, kafka_settings: KafkaSettings, producer: Any) -> None:
    from fte.events.v1 import customer_events_pb2
    from fte_runtime.kafka import ensure_topics

    topic = f"test.customers.{uuid.uuid4().hex[:6]}"
    await ensure_topics(kafka_settings.kafka_bootstrap, [topic])
    agent = await start_agent(customers_topic=topic)
    processor = agent.agent.processor
    first, _ = message("email", "How do I reset my password?", who="erase-me")
    other, _ = message("email", "How do I connect Slack?", who="keep-me")
    await processor.handle(first)
    await processor.handle(other)
    pool = agent.agent.pool
    erased = await pool.fetchval(
        "SELECT customer FROM tickets WHERE id IN (SELECT ticket_id FROM inbound WHERE channel_message_id = $1)",
        first.channel_message_id,
    )
    kept = await pool.fetchval(
        "SELECT customer FROM tickets WHERE id IN (SELECT ticket_id FROM inbound WHERE channel_message_id = $1)",
        other.channel_message_id,
    )
    merged = customer_events_pb2.CustomersMerged(source_customer=kept, target_customer="customers/target")
    merged.merged_time.GetCurrentTime()
    gone = customer_events_pb2.CustomerErased(customer=erased)
    gone.erased_time.GetCurrentTime()
    for event in (merged, gone):
        value, headers = envelope.encode(event, source="//identity.test")
        await producer.send_and_wait(topic, value=value, key=b"k", headers=headers)

    async def applied() -> bool:
        texts = await pool.fetch("SELECT text FROM messages WHERE customer = $1", erased)
        moved = await pool.fetchval("SELECT count(*) FROM tickets WHERE customer = 'customers/target'")
        return bool(texts) and all(r["text"] == "[erased]" for r in texts) and moved == 1

    await eventually(applied, what="erasure and merge applied")
    assert await pool.fetchval("SELECT count(*) FROM tickets WHERE customer = $1", kept) == 0


async def test_a_nul_byte_does_not_stop_the_answer(running: Any) -> None:
    agent, clients = running
    msg, _ = message("web_form", "Which browsers\x00 are supported?", subject="Browsers\x00")
    assert await agent.agent.processor.handle(msg) == "replied"
    ticket = f"tickets/{msg.web_form.ticket_reference}"
    texts = [m.text for m in await clients.messages(ticket)]
    assert texts[0] == "Which browsers are supported?"
    assert "supported-browsers" in texts[1]


async def test_a_customer_flooding_the_inbox_slows_only_themselves(
    start_agent: Any, mesh: Any, tokens: dict[str, str], producer: AIOKafkaProducer
) -> None:
    # Paced to one message every 10 s after the first. Records waiting for their pace once held
    # every in-flight slot, so nobody else was fetched until the flood had drained.
    agent = await start_agent(max_in_flight=4, max_per_customer=4, rate_burst=1, rate_per_minute=6)
    clients = Clients(agent, mesh, tokens)
    topic = agent.agent.settings.incoming_topic
    flooder = f"flood-{uuid.uuid4().hex[:6]}"

    async def send(msg: Any, key: str, partition: int) -> None:
        value, headers = envelope.encode(msg, source="//gateway.test")
        await producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers, partition=partition)

    async def answered(prefix: str) -> list[agent_pb2.Ticket]:
        return [t for t in await clients.tickets() if t.subject.startswith(prefix) and t.first_response_time.seconds]

    try:
        for i in range(12):
            msg, key = message("email", "How do I export a project to CSV?", who=flooder, subject=f"flood {i}")
            await send(msg, key, 0)
        await eventually(lambda: answered("flood"), timeout=30, what="the flood's first answer")
        msg, key = message("email", "How do I connect Slack?", subject="someone else")
        await send(msg, key, 1)
        await eventually(lambda: answered("someone else"), timeout=15, what="the other customer's answer")
        # ... while the flood is still being paced.
        assert len(await answered("flood")) <= 3
    finally:
        await clients.close()


async def test_a_dead_letter_is_listed_shown_redacted_and_replayed_to_one_answer(
    running: Any, producer: AIOKafkaProducer, kafka_settings: KafkaSettings
) -> None:
    agent, clients = running
    topic = agent.agent.settings.incoming_topic
    bootstrap = kafka_settings.kafka_bootstrap
    # A message an earlier release could not handle, in the DLQ as the runtime leaves it.
    text = f"How do I export a project to CSV? ({uuid.uuid4().hex[:6]})"
    msg, key = message("email", text, subject="dead letter")
    value, headers = envelope.encode(msg, source="//gateway.test")
    failed = ConsumerRecord(topic, 0, 41, 0, 0, key.encode(), value, None, len(key), len(value), headers)
    await dead_letter(producer, failed, "PoisonRecord: identity rejected the sender (since fixed)")

    (letter,) = await dlq.read(bootstrap, topic)
    assert (letter.error, letter.event_type) == (
        "PoisonRecord: identity rejected the sender (since fixed)",
        "fte.events.v1.MessageReceived",
    )
    shown = dlq.redacted(letter)
    assert text not in json.dumps(shown)
    assert msg.sender.email not in json.dumps(shown)
    assert shown["event"]["channel_message_id"] == msg.channel_message_id  # ids stay, to find it

    (first,) = await dlq.replay(bootstrap, [letter], actor="sre-on-call")
    assert not first.skipped
    assert first.to.startswith(f"{topic}/")
    (second,) = await dlq.replay(bootstrap, [letter], actor="sre-on-call")
    assert second.skipped  # replayed before
    (forced,) = await dlq.replay(bootstrap, [letter], actor="sre-on-call", again=True)
    assert not forced.skipped
    # The same customer's next message is handled after both replayed copies (one key, in order).
    later, _ = message("email", "How do I connect Slack?", subject="after the replay")
    later.sender.CopyFrom(msg.sender)
    await publish(producer, topic, later, key)

    async def both_answered() -> list[agent_pb2.Ticket] | None:
        tickets = [t for t in await clients.tickets() if t.first_response_time.seconds]
        return tickets if {"dead letter", "after the replay"} <= {t.subject for t in tickets} else None

    tickets = await eventually(both_answered, timeout=60, what="the replayed message and the next one answered")
    (ticket,) = [t for t in tickets if t.subject == "dead letter"]
    replies = [m for m in await clients.messages(ticket.name) if m.author == agent_pb2.AUTHOR_AGENT]
    assert len(replies) == 1
    assert len(await clients.deliveries(ticket.name)) == 1
    audit = [e for e in await dlq.read_audit(bootstrap) if e["dead_letter"] == letter.ref]
    assert [(e["actor"], e["replayed_to"]) for e in audit] == [("sre-on-call", first.to), ("sre-on-call", forced.to)]

    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fte_runtime.dlq", "--bootstrap", bootstrap, "list", topic,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    listing = (await cli.communicate())[0].decode()
    assert cli.returncode == 0
    assert f"{topic}.dlq: 1 record(s)" in listing
    assert "identity rejected the sender (since fixed)" in listing
    assert "(replayed)" in listing
