"""Gmail push: the real google-auth verification against a local certs URL, the real Gmail client
against the fake Gmail API, events read back from the real broker."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte_gateway.server import GatewayServer
from fte_runtime import topics
from fte_stack.fakes.gmail import FakeGmail, build_email
from fte_stack.fakes.google_certs import FakeGoogleCerts, SigningKey, push_claims
from gateway_helpers import (  # type: ignore[import-not-found]
    MAILBOX,
    PUSH_ACCOUNT,
    PUSH_AUDIENCE,
    EventLog,
    GatewayFactory,
    push_body,
)

pytestmark = pytest.mark.kafka

CUSTOMER = "Grace Hopper <Grace.Hopper@Example.org>"


def token(certs: FakeGoogleCerts, **overrides: Any) -> dict[str, str]:
    claims = {"audience": PUSH_AUDIENCE, "email": PUSH_ACCOUNT, **overrides}
    return {"Authorization": "Bearer " + certs.sign_push_token(**claims)}


async def push(client: httpx.AsyncClient, certs: FakeGoogleCerts, gmail: FakeGmail, **claims: Any) -> httpx.Response:
    return await client.post(
        "/webhooks/gmail", json=push_body(MAILBOX, gmail.history_id), headers=token(certs, **claims)
    )


async def emails(event_log: EventLog, before: Any) -> list[message_events_pb2.MessageReceived]:
    out = []
    for rec in await event_log.since(before):
        assert rec.topic == topics.TICKETS_INCOMING
        assert isinstance(rec.event.message, message_events_pb2.MessageReceived)
        out.append(rec.event.message)
    return out


async def test_push_publishes_new_inbox_mail(
    client: httpx.AsyncClient, fake_gmail: FakeGmail, fake_certs: FakeGoogleCerts, event_log: EventLog
) -> None:
    # The first push with no stored position syncs recent mail: an empty mailbox here.
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    first = fake_gmail.deliver(
        build_email(
            sender=CUSTOMER,
            to=MAILBOX,
            subject="=?utf-8?q?Invoice_=E2=82=AC_wrong?=",
            text="Hello,\n\nmy invoice shows the wrong amount.\n\nThanks\n-- \nGrace\nRear Admiral\n",
            message_id="<m1@example.org>",
            attachments={"invoice.pdf": ("application/pdf", b"%PDF-1.7 " * 100)},
        )
    )
    reply = fake_gmail.deliver(
        build_email(
            sender=CUSTOMER,
            to=MAILBOX,
            subject="Re: Invoice",
            text="Any news?\n\nOn Mon, 1 Jan 2026 at 10:00, Support <support@example.com>\nwrote:\n> We are on it.\n",
            html=(
                "<div>Any news?</div>"
                "<div class='gmail_quote'>On Mon ... wrote: <blockquote>We are on it.</blockquote></div>"
            ),
            message_id="<m2@example.org>",
            in_reply_to="<m1@example.org>",
            references="<m1@example.org>",
        )
    )
    before = await event_log.snapshot()
    resp = await push(client, fake_certs, fake_gmail)
    assert resp.status_code == 204
    records = await event_log.since(before)
    assert [r.key for r in records] == ["email:grace.hopper@example.org"] * 2
    assert [r.event.id for r in records] == [f"gmail:{first.id}", f"gmail:{reply.id}"]
    got = [r.event.message for r in records]
    for msg in got:
        assert msg.HasField("received_time")
        msg.ClearField("received_time")
    assert got[0] == message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_EMAIL,
        channel_message_id=first.id,
        sender=message_events_pb2.Sender(email="Grace.Hopper@Example.org", email_authenticated=True),
        display_name="Grace Hopper",
        subject="Invoice € wrong",
        text_body="Hello,\n\nmy invoice shows the wrong amount.\n\nThanks",
        attachments=[
            common_pb2.Attachment(
                attachment_id=got[0].attachments[0].attachment_id,
                filename="invoice.pdf",
                content_type="application/pdf",
                size_bytes=900,
            )
        ],
        email_thread=common_pb2.EmailThread(message_id="<m1@example.org>", gmail_thread_id=first.thread_id),
        recipient_address=MAILBOX,
    )
    assert got[0].attachments[0].attachment_id
    assert got[1].text_body == "Any news?"
    assert got[1].email_thread == common_pb2.EmailThread(
        message_id="<m2@example.org>",
        in_reply_to="<m1@example.org>",
        references=["<m1@example.org>"],
        gmail_thread_id=first.thread_id,
    )
    # A repeated push finds nothing new.
    again = await event_log.snapshot()
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    assert await event_log.since(again) == []


async def test_html_only_mail_and_own_messages(
    client: httpx.AsyncClient, fake_gmail: FakeGmail, fake_certs: FakeGoogleCerts, event_log: EventLog
) -> None:
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    html_only = EmailMessage()
    html_only["From"] = "ops@example.net"
    html_only["To"] = MAILBOX
    html_only["Subject"] = "Login broken"
    html_only["Message-ID"] = "<h1@example.net>"
    html_only.set_content("<p>I cannot <b>log in</b>&nbsp;since today.</p><script>x()</script>", subtype="html")
    fake_gmail.deliver(html_only.as_bytes())
    # The system's own reply (SENT) and a copy from our own address must never become tickets.
    fake_gmail.deliver(build_email(sender=MAILBOX, to="ops@example.net", subject="Re", text="ours"), labels=("SENT",))
    fake_gmail.deliver(build_email(sender=f"Support <{MAILBOX.upper()}>", to=MAILBOX, subject="loop", text="ours"))
    before = await event_log.snapshot()
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    got = await emails(event_log, before)
    assert [m.text_body for m in got] == ["I cannot log in since today."]
    assert got[0].sender.email == "ops@example.net"


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"aud": "https://someone-else.example/push"}, 401),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 4200}, 401),
        ({"iss": "https://evil.example"}, 401),
        ({"email": "intruder@other.iam.gserviceaccount.com"}, 403),
        ({"email_verified": False}, 403),
    ],
    ids=["audience", "expired", "issuer", "service-account", "unverified"],
)
async def test_bad_tokens_publish_nothing(  # noqa: PLR0917 - fixtures and parameters
    client: httpx.AsyncClient,
    fake_gmail: FakeGmail,
    fake_certs: FakeGoogleCerts,
    event_log: EventLog,
    claims: dict[str, Any],
    status: int,
) -> None:
    fake_gmail.deliver(build_email(sender=CUSTOMER, to=MAILBOX, subject="s", text="hello there"))
    before = await event_log.snapshot()
    resp = await push(client, fake_certs, fake_gmail, **claims)
    assert resp.status_code == status
    assert await event_log.since(before) == []


async def test_missing_or_foreign_signed_token_is_401(
    client: httpx.AsyncClient, fake_gmail: FakeGmail, event_log: EventLog
) -> None:
    fake_gmail.deliver(build_email(sender=CUSTOMER, to=MAILBOX, subject="s", text="hello there"))
    before = await event_log.snapshot()
    body = push_body(MAILBOX, fake_gmail.history_id)
    assert (await client.post("/webhooks/gmail", json=body)).status_code == 401
    assert (await client.post("/webhooks/gmail", json=body, headers={"Authorization": "Basic eDp5"})).status_code == 401
    # Right claims, but signed by a key the certs endpoint does not serve.
    forged = SigningKey().sign(push_claims(audience=PUSH_AUDIENCE, email=PUSH_ACCOUNT))
    resp = await client.post("/webhooks/gmail", json=body, headers={"Authorization": f"Bearer {forged}"})
    assert resp.status_code == 401
    assert await event_log.since(before) == []


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'{"message": {"data": "!!!"}}', b'{"message": {"data": "eyJ4IjogMX0"}}', b"[" * 100_000],
    ids=["not-json", "no-message", "bad-base64", "no-email", "deep-nesting"],
)
async def test_bad_bodies_are_400(
    client: httpx.AsyncClient, fake_certs: FakeGoogleCerts, event_log: EventLog, body: bytes
) -> None:
    before = await event_log.snapshot()
    headers = {**token(fake_certs), "content-type": "application/json"}
    assert (await client.post("/webhooks/gmail", content=body, headers=headers)).status_code == 400
    assert await event_log.since(before) == []


async def test_stale_history_falls_back_without_duplicates(
    client: httpx.AsyncClient, fake_gmail: FakeGmail, fake_certs: FakeGoogleCerts, event_log: EventLog
) -> None:
    seen = fake_gmail.deliver(build_email(sender=CUSTOMER, to=MAILBOX, subject="old", text="already handled"))
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    fake_gmail.expire_history()
    missed = fake_gmail.deliver(build_email(sender=CUSTOMER, to=MAILBOX, subject="new", text="arrived meanwhile"))
    before = await event_log.snapshot()
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    got = await emails(event_log, before)
    assert [m.channel_message_id for m in got] == [missed.id]
    assert seen.id != missed.id


async def test_gmail_failure_is_503_and_retried_later(
    client: httpx.AsyncClient, fake_gmail: FakeGmail, fake_certs: FakeGoogleCerts, event_log: EventLog
) -> None:
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    mail = fake_gmail.deliver(build_email(sender=CUSTOMER, to=MAILBOX, subject="s", text="please help me"))
    fake_gmail.fail_next(2, 500, path="/messages/")
    before = await event_log.snapshot()
    assert (await push(client, fake_certs, fake_gmail)).status_code == 503
    assert await event_log.since(before) == []
    # Pub/Sub redelivers: the position was not moved, so the message comes through now.
    assert (await push(client, fake_certs, fake_gmail)).status_code == 204
    assert [m.channel_message_id for m in await emails(event_log, before)] == [mail.id]


async def test_periodic_sweep_catches_dropped_pushes(
    start_gateway: GatewayFactory, fake_gmail: FakeGmail, fake_certs: FakeGoogleCerts, event_log: EventLog
) -> None:
    server: GatewayServer = await start_gateway(gmail_sweep_seconds=0.2)
    async with httpx.AsyncClient(base_url=server.url) as c:
        assert (await push(c, fake_certs, fake_gmail)).status_code == 204
    before = await event_log.snapshot()
    mail = fake_gmail.deliver(build_email(sender=CUSTOMER, to=MAILBOX, subject="s", text="no push for this one"))
    async with asyncio.timeout(10):
        while not (got := await emails(event_log, before)):  # noqa: ASYNC110 - polling the broker
            await asyncio.sleep(0.1)
    assert [m.channel_message_id for m in got] == [mail.id]


async def test_gmail_watch_command(
    start_gateway: GatewayFactory, fake_gmail: FakeGmail, kafka_bootstrap: str, new_database: Any
) -> None:
    env = {
        **os.environ,
        "FTE_GATEWAY_DATABASE_URL": await new_database(),
        "FTE_GATEWAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FTE_GATEWAY_GMAIL_API_ENDPOINT": fake_gmail.url,
        "FTE_GATEWAY_GMAIL_WATCH_TOPIC": "projects/p/topics/gmail",
        "FTE_GATEWAY_LOG_JSON": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fte_gateway", "gmail-watch", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f'"historyId": "{fake_gmail.history_id}"' in out.decode()
    assert fake_gmail.watches[-1]["topicName"] == "projects/p/topics/gmail"
    assert fake_gmail.watches[-1]["labelIds"] == ["INBOX"]
