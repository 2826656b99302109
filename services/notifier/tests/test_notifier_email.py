"""Email and web-form replies through google-api-python-client to the local fake Gmail API."""

from __future__ import annotations

import asyncio
import email
import email.policy

from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_service_pb2
from fte_stack.fakes import gmail as gmail_fake
from fte_stack.fakes.gmail import FakeGmail
from notifier_helpers import NotifierFactory, email_request, provider_env, wait_final  # type: ignore[import-not-found]

SENT = common_pb2.DELIVERY_STATUS_SENT
FAILED = common_pb2.DELIVERY_STATUS_FAILED


async def test_reply_threads_in_gmail_with_headers_and_alternatives(
    start_notifier: NotifierFactory, fake_gmail: FakeGmail
) -> None:
    original = fake_gmail.deliver(
        gmail_fake.build_email(
            sender="customer@example.org",
            to="support@example.com",
            subject="Cannot export my report",
            text="Export fails with an error.",
            message_id="<orig-1@mail.example.org>",
            references="<older-0@mail.example.org>",
        )
    )
    n = await start_notifier(**provider_env(fake_gmail, None))
    reply_to = common_pb2.EmailThread(
        message_id="<orig-1@mail.example.org>",
        in_reply_to="<older-0@mail.example.org>",
        references=["<older-0@mail.example.org>"],
        gmail_thread_id=original.thread_id,
    )
    resp = await n.stub.SendMessage(
        email_request(
            "Hello,\n\nOpen Reports > Export & choose CSV.\n\nThe team",
            subject="Cannot export my report",
            reply_to=reply_to,
            ticket_id="T-1",
        )
    )
    assert not resp.duplicate
    assert resp.delivery.status == common_pb2.DELIVERY_STATUS_QUEUED
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT, delivery.last_error
    assert not delivery.local_only

    sent = fake_gmail.sent()
    assert len(sent) == 1
    assert list(delivery.provider_message_ids) == [sent[0].id]
    assert sent[0].thread_id == original.thread_id
    msg = email.message_from_bytes(sent[0].raw, policy=email.policy.default)
    assert msg["Subject"] == "Re: Cannot export my report"
    assert msg["To"] == "customer@example.org"
    assert msg["In-Reply-To"] == "<orig-1@mail.example.org>"
    assert msg["References"] == "<older-0@mail.example.org> <orig-1@mail.example.org>"
    assert msg["Message-ID"] == f"<{delivery.name.removeprefix('deliveries/')}@notifier.fte.local>"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None
    assert "Reports > Export & choose CSV" in plain.get_content()
    assert rich is not None
    assert "Reports &gt; Export &amp; choose CSV" in rich.get_content()


async def test_a_connection_gmail_closed_while_idle_costs_no_attempt(
    start_notifier: NotifierFactory, fake_gmail: FakeGmail
) -> None:
    n = await start_notifier(**provider_env(fake_gmail, None))
    first = await n.stub.SendMessage(email_request("Your export is ready.", subject="Export"))
    assert (await wait_final(n.stub, first.delivery.name)).status == SENT
    # Past the fake's keep-alive (uvicorn's 5 s): the server closes the kept-alive connection.
    await asyncio.sleep(6)
    second = await n.stub.SendMessage(email_request("Your invoice is attached.", subject="Invoice"))
    delivery = await wait_final(n.stub, second.delivery.name)
    assert delivery.status == SENT, delivery.last_error
    assert (delivery.attempts, delivery.last_error) == (1, "")
    assert len(fake_gmail.sent()) == 2


async def test_gmail_500s_are_retried_then_sent_once(start_notifier: NotifierFactory, fake_gmail: FakeGmail) -> None:
    fake_gmail.fail_next(2, status=500, path="messages/send")
    n = await start_notifier(**provider_env(fake_gmail, None))
    resp = await n.stub.SendMessage(email_request("Your refund was processed.", subject="Refund"))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT, delivery.last_error
    assert delivery.attempts == 3
    assert len(fake_gmail.sent()) == 1
    sends = [path for method, path in fake_gmail.state.requests if path.endswith("messages/send")]
    assert len(sends) == 3


async def test_gmail_refusal_fails_at_once_with_the_reason(
    start_notifier: NotifierFactory, fake_gmail: FakeGmail
) -> None:
    fake_gmail.fail_next(1, status=400, path="messages/send")
    n = await start_notifier(**provider_env(fake_gmail, None))
    resp = await n.stub.SendMessage(email_request("Hello.", subject="Hi"))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == FAILED
    assert delivery.attempts == 1
    assert "400" in delivery.last_error
    assert fake_gmail.sent() == []


async def test_gmail_retries_stop_after_five_attempts(start_notifier: NotifierFactory, fake_gmail: FakeGmail) -> None:
    fake_gmail.fail_next(50, status=503, path="messages/send")
    n = await start_notifier(**provider_env(fake_gmail, None))
    resp = await n.stub.SendMessage(email_request("Hello.", subject="Hi"))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == FAILED
    assert delivery.attempts == 5
    assert "gave up after 5 attempts" in delivery.last_error
    assert "503" in delivery.last_error


async def test_web_form_reply_is_stored_and_emailed(start_notifier: NotifierFactory, fake_gmail: FakeGmail) -> None:
    n = await start_notifier(**provider_env(fake_gmail, None))
    resp = await n.stub.SendMessage(
        email_request(
            "We reset your password; check your inbox.",
            channel=common_pb2.CHANNEL_WEB_FORM,
            subject="Password reset",
            ticket_id="T-web-1",
            recipient="submitter@example.org",
        )
    )
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT, delivery.last_error
    # Stored for the ticket status page...
    listed = await n.stub.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest(ticket_id="T-web-1"))
    assert [d.text_body for d in listed.deliveries] == ["We reset your password; check your inbox."]
    assert listed.deliveries[0].channel == common_pb2.CHANNEL_WEB_FORM
    # ...and a copy emailed to the submitter.
    sent = fake_gmail.sent()
    assert len(sent) == 1
    msg = email.message_from_bytes(sent[0].raw, policy=email.policy.default)
    assert msg["To"] == "submitter@example.org"
    assert msg["Subject"] == "Password reset"
    body = msg.get_body(("plain",))
    assert body is not None
    assert "We reset your password" in body.get_content()
