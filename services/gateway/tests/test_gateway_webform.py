"""The support form, its submit API, the status page, and the operational routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte_gateway.forms import REFERENCE, mint_reference
from fte_gateway.server import GatewayServer
from fte_runtime import topics
from gateway_helpers import TWILIO_TOKEN, EventLog, FakeAgentService, GatewayFactory, twilio_sign  # type: ignore[import-not-found]
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import generate_latest

GOOD = {
    "name": "Ada Lovelace",
    "email": "Ada@Example.com",
    "phone": "+44 20 7946 0958",
    "subject": "Cannot export reports",
    "category": "technical",
    "priority": "high",
    "message": "The export button does nothing since yesterday.",
}


@pytest.mark.kafka
async def test_json_submit_publishes_the_form(client: httpx.AsyncClient, event_log: EventLog) -> None:
    before = await event_log.snapshot()
    resp = await client.post("/support/submit", json=GOOD, headers={"X-Correlation-Id": "corr-form-1"})
    assert resp.status_code == 202
    reference = resp.json()["reference"]
    assert REFERENCE.match(reference)
    assert resp.json()["status_url"] == f"/support/ticket/{reference}"
    records = await event_log.since(before)
    assert [(r.topic, r.key) for r in records] == [(topics.TICKETS_INCOMING, "email:ada@example.com")]
    assert records[0].event.correlation_id == "corr-form-1"
    msg = records[0].event.message
    msg.ClearField("received_time")
    assert msg == message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WEB_FORM,
        channel_message_id=reference,
        sender=message_events_pb2.Sender(email="Ada@Example.com", phone="+44 20 7946 0958"),
        display_name="Ada Lovelace",
        subject="Cannot export reports",
        text_body="The export button does nothing since yesterday.",
        web_form=message_events_pb2.WebForm(
            category=common_pb2.CATEGORY_TECHNICAL, priority=common_pb2.PRIORITY_HIGH, ticket_reference=reference
        ),
    )


@pytest.mark.kafka
async def test_form_encoded_submit_and_idempotent_reference(client: httpx.AsyncClient, event_log: EventLog) -> None:
    form = {k: v for k, v in GOOD.items() if k not in ("phone", "category", "priority")}
    form["request_id"] = "3f1c9a52-0d55-4a53-9b1e-7d5a2c1e0f00"
    before = await event_log.snapshot()
    first = await client.post("/support/submit", data=form, headers={"Accept": "application/json"})
    again = await client.post("/support/submit", data=form, headers={"Accept": "application/json"})
    assert first.status_code == again.status_code == 202
    assert first.json()["reference"] == again.json()["reference"] == mint_reference(form["request_id"])
    records = await event_log.since(before)
    assert len(records) == 2
    msg = records[0].event.message
    assert msg.web_form.category == common_pb2.CATEGORY_GENERAL
    assert msg.web_form.priority == common_pb2.PRIORITY_MEDIUM
    assert msg.sender == message_events_pb2.Sender(email="Ada@Example.com")
    # The same event id for the retry: the agent keeps one ticket.
    assert records[0].event.id == records[1].event.id


@pytest.mark.kafka
async def test_browser_without_javascript_gets_pages(client: httpx.AsyncClient) -> None:
    ok = await client.post("/support/submit", data=GOOD, headers={"Accept": "text/html"})
    assert ok.status_code == 202
    assert "Thank you, we have your request" in ok.text
    bad = await client.post("/support/submit", data={**GOOD, "email": "nope"}, headers={"Accept": "text/html"})
    assert bad.status_code == 422
    assert "valid email address" in bad.text


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"message": "too short"}, {"message"}),
        ({"message": "x" * 5001}, {"message"}),
        ({"email": "ada@", "name": " "}, {"email", "name"}),
        ({"phone": "call me"}, {"phone"}),
        ({"category": "sales", "priority": "urgent"}, {"category", "priority"}),
        ({"subject": ""}, {"subject"}),
        ({"name": ["a list"]}, {"name"}),
    ],
    ids=["short", "long", "email-name", "phone", "enums", "subject", "wrong-type"],
)
async def test_invalid_submits_are_422_with_field_errors(
    client: httpx.AsyncClient, event_log: EventLog, change: dict[str, object], fields: set[str]
) -> None:
    before = await event_log.snapshot()
    resp = await client.post("/support/submit", json={**GOOD, **change})
    assert resp.status_code == 422
    assert set(resp.json()["fields"]) == fields
    assert all(isinstance(v, str) and v for v in resp.json()["fields"].values())
    assert await event_log.since(before) == []


@pytest.mark.kafka
async def test_bad_bodies_honeypot_and_body_limit(start_gateway: GatewayFactory, event_log: EventLog) -> None:
    server: GatewayServer = await start_gateway(form_rate_per_minute=0)
    client = httpx.AsyncClient(base_url=server.url)
    before = await event_log.snapshot()
    bodies = [
        (b"[1, 2]", "application/json"),
        (b"{not json", "application/json"),
        (b"[" * 100_000, "application/json"),  # nesting deep enough to exhaust the decoder's recursion
        (b"\xff\xfe{}", "application/json"),
        (b"x", "text/plain"),
    ]
    for body, ctype in bodies:
        resp = await client.post("/support/submit", content=body, headers={"content-type": ctype})
        assert resp.status_code == 422
    bot = await client.post("/support/submit", json={**GOOD, "website": "http://spam.example"})
    assert bot.status_code == 202  # looks accepted to the bot
    huge = await client.post("/support/submit", json={**GOOD, "message": "x" * 200_000})
    assert huge.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(200):
            yield b" " * 1024

    streamed = await client.post("/support/submit", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    await client.aclose()
    assert await event_log.since(before) == []


@pytest.mark.kafka
async def test_rate_limit_per_client(start_gateway: GatewayFactory) -> None:
    server: GatewayServer = await start_gateway(form_rate_per_minute=1, form_rate_burst=2)
    async with httpx.AsyncClient(base_url=server.url) as c:
        codes = [(await c.post("/support/submit", json=GOOD)).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        limited = await c.post("/support/submit", json=GOOD)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


@pytest.mark.kafka
async def test_cors_for_configured_origins(start_gateway: GatewayFactory) -> None:
    server: GatewayServer = await start_gateway(cors_origins=["https://shop.example.com"])
    preflight = {"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"}
    async with httpx.AsyncClient(base_url=server.url) as c:
        allowed = await c.options(
            "/support/submit", headers={**preflight, "Access-Control-Request-Headers": "content-type"}
        )
        other = await c.options("/support/submit", headers={**preflight, "Origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.kafka
async def test_support_page_and_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/support")
    assert page.status_code == 200
    for needle in (
        'name="name"',
        'name="email"',
        'name="phone"',
        'name="subject"',
        'name="category"',
        'name="priority"',
        'name="message"',
        'name="website"',
        'maxlength="5000"',
        "message-count",
    ):
        assert needle in page.text
    assert "frame-ancestors *" in page.headers["content-security-policy"]
    for path in ("/support/static/support.js", "/support/static/support.css", "/support/embed.js"):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/support/static/../settings.py")).status_code == 404


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


@pytest.mark.kafka
async def test_status_page_reads_the_ticket(client: httpx.AsyncClient, agent: FakeAgentService) -> None:
    reference = mint_reference()
    name = f"tickets/{reference}"
    agent.add(
        agent_pb2.Ticket(name=name, subject="Cannot export <reports>", status=agent_pb2.TICKET_STATUS_IN_PROGRESS),
        [
            agent_pb2.Message(ticket=name, author=agent_pb2.AUTHOR_CUSTOMER, text="Export fails", create_time=_ts(1)),
            agent_pb2.Message(ticket=name, author=agent_pb2.AUTHOR_AGENT, text="Try <b>CSV</b>", create_time=_ts(2)),
        ],
    )
    page = await client.get(f"/support/ticket/{reference}")
    assert page.status_code == 200
    assert "In progress" in page.text
    assert "Cannot export &lt;reports&gt;" in page.text
    assert "Try &lt;b&gt;CSV&lt;/b&gt;" in page.text
    as_json = await client.get(f"/support/ticket/{reference}", headers={"Accept": "application/json"})
    assert as_json.json()["messages"] == [
        {"author": "You", "text": "Export fails", "time": "1970-01-01T00:00:01+00:00"},
        {"author": "Support", "text": "Try <b>CSV</b>", "time": "1970-01-01T00:00:02+00:00"},
    ]
    pending = await client.get(f"/support/ticket/{mint_reference()}")
    assert pending.status_code == 200
    assert "Received" in pending.text
    assert (await client.get("/support/ticket/not-a-reference")).status_code == 404


@pytest.mark.kafka
async def test_status_page_when_agent_is_down(start_gateway: GatewayFactory) -> None:
    server: GatewayServer = await start_gateway(agent_target="127.0.0.1:1", agent_timeout_seconds=0.5)
    async with httpx.AsyncClient(base_url=server.url) as c:
        resp = await c.get(f"/support/ticket/{mint_reference()}")
    assert resp.status_code == 503
    assert "not available" in resp.text


@pytest.mark.kafka
async def test_operational_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await client.post("/support/submit", json={**GOOD, "message": "short"})
    # Metrics live in this process's registry (served on their own port by `serve`), not on the edge.
    metrics = generate_latest().decode()
    assert 'gateway_rejected_total{reason="invalid",route="/support/submit"}' in metrics
    assert "kafka_produced_total" in metrics
    assert (await client.get("/metrics")).status_code == 404
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert {"/webhooks/gmail", "/webhooks/whatsapp", "/webhooks/whatsapp/status", "/support/submit"} <= set(
        spec["paths"]
    )
    resp = await client.get("/healthz", headers={"X-Correlation-Id": "abc-123"})
    assert resp.headers["x-correlation-id"] == "abc-123"


async def test_kafka_down_is_503_and_never_acknowledged(start_gateway: GatewayFactory) -> None:
    server: GatewayServer = await start_gateway(
        ready=False, kafka_bootstrap="127.0.0.1:1", publish_timeout_seconds=1, gmail_enabled=False
    )
    async with httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 503
        form = await c.post("/support/submit", json=GOOD)
        assert form.status_code == 503
        assert "try again" in form.json()["message"]
        params = {"MessageSid": "SMdown", "From": "whatsapp:+14155550100", "Body": "hi"}
        sig = twilio_sign(TWILIO_TOKEN, server.url + "/webhooks/whatsapp", params)
        wa = await c.post("/webhooks/whatsapp", data=params, headers={"X-Twilio-Signature": sig})
        assert wa.status_code == 503


@pytest.mark.kafka
async def test_a_reply_typed_on_the_status_page_is_a_follow_up_on_that_ticket(
    client: httpx.AsyncClient, agent: FakeAgentService, event_log: EventLog
) -> None:
    reference = mint_reference()
    name = f"tickets/{reference}"
    agent.add(agent_pb2.Ticket(name=name, subject="Connect", status=agent_pb2.TICKET_STATUS_OPEN))
    page = await client.get(f"/support/ticket/{reference}")
    assert f'action="/support/ticket/{reference}/reply"' in page.text
    before = await event_log.snapshot()
    resp = await client.post(f"/support/ticket/{reference}/reply", json={"message": " 123456 "})
    assert resp.status_code == 202, resp.text
    [record] = await event_log.since(before)
    msg = record.event.message
    assert isinstance(msg, message_events_pb2.MessageReceived)
    assert (msg.channel, msg.text_body) == (common_pb2.CHANNEL_WEB_FORM, "123456")
    assert (msg.web_form.ticket_reference, msg.web_form.follow_up) == (reference, True)
    assert not msg.sender.email  # the reference names the ticket and its customer
    # No such ticket, a bad reference, an empty reply: refused, nothing published.
    before = await event_log.snapshot()
    missing = await client.post(f"/support/ticket/{mint_reference()}/reply", json={"message": "123456"})
    assert missing.status_code == 404
    assert (await client.post("/support/ticket/not-a-reference/reply", json={"message": "x"})).status_code == 404
    empty = await client.post(f"/support/ticket/{reference}/reply", json={"message": "  "})
    assert empty.status_code == 422
    assert empty.json()["fields"] == {"message": "Please type your reply."}
    assert await event_log.since(before) == []
