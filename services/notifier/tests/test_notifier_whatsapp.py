"""WhatsApp through the twilio SDK against the local fake Twilio Messages API."""

from __future__ import annotations

import asyncio
import json

from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_pb2
from fte_stack.fakes._http import LocalHttpServer
from fte_stack.fakes.twilio import FakeTwilio
from notifier_helpers import (  # type: ignore[import-not-found]
    APPROVED_TEMPLATE,
    CUSTOMER,
    NotifierFactory,
    ago,
    provider_env,
    wait_final,
    whatsapp_request,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

SENT = common_pb2.DELIVERY_STATUS_SENT
FAILED = common_pb2.DELIVERY_STATUS_FAILED
CALLBACK = "https://gateway.example.com/webhooks/whatsapp/status"


async def test_long_text_goes_out_as_ordered_parts_with_status_callbacks(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio
) -> None:
    n = await start_notifier(**provider_env(None, fake_twilio), gateway_base_url="https://gateway.example.com/")
    sentences = [f"Step {i}: open the settings page and check option number {i} carefully." for i in range(60)]
    text = " ".join(sentences)
    assert len(text) > 3200
    resp = await n.stub.SendMessage(whatsapp_request(text, ticket_id="T-wa-1"))
    assert resp.delivery.part_count == 3
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT, delivery.last_error

    messages = fake_twilio.messages()
    assert len(messages) == 3
    assert list(delivery.provider_message_ids) == [m.sid for m in messages]
    assert all(len(m.body) <= 1600 for m in messages)
    assert all(m.body.endswith(".") for m in messages)
    assert " ".join(m.body for m in messages) == text
    assert {m.to for m in messages} == {CUSTOMER}
    assert {m.from_ for m in messages} == {n.settings.whatsapp_from}
    assert {m.status_callback for m in messages} == {CALLBACK}


async def test_closed_window_sends_the_approved_template_only(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio
) -> None:
    n = await start_notifier(**provider_env(None, fake_twilio))
    template = notifier_pb2.WhatsAppTemplate(content_sid=APPROVED_TEMPLATE, variables={"1": "Ada", "2": "T-9"})
    resp = await n.stub.SendMessage(
        whatsapp_request("Your ticket was answered.", customer_last_message_time=ago(hours=30), template=template)
    )
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT, delivery.last_error
    [message] = fake_twilio.messages()
    assert message.content_sid == APPROVED_TEMPLATE
    assert json.loads(message.content_variables) == {"1": "Ada", "2": "T-9"}
    assert message.body.startswith("[template ")  # no free-form body was sent
    assert message.status_callback.endswith("/webhooks/whatsapp/status")


async def test_open_window_sends_text_even_with_a_template(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio
) -> None:
    n = await start_notifier(**provider_env(None, fake_twilio))
    template = notifier_pb2.WhatsAppTemplate(content_sid=APPROVED_TEMPLATE)
    resp = await n.stub.SendMessage(whatsapp_request("Here is the answer.", template=template))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT
    [message] = fake_twilio.messages()
    assert message.body == "Here is the answer."
    assert message.content_sid == ""


async def test_twilio_500_is_retried_then_sent_once(start_notifier: NotifierFactory, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(2, status=500)
    n = await start_notifier(**provider_env(None, fake_twilio))
    resp = await n.stub.SendMessage(whatsapp_request("Thanks for waiting."))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == SENT, delivery.last_error
    assert delivery.attempts == 3
    assert fake_twilio.attempts == 3
    assert len(fake_twilio.messages()) == 1


async def test_invalid_number_fails_at_once_with_twilio_reason(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.add_invalid_number("+12025550123")
    n = await start_notifier(**provider_env(None, fake_twilio))
    resp = await n.stub.SendMessage(whatsapp_request("Hello.", recipient="whatsapp:+12025550123"))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == FAILED
    assert delivery.attempts == 1
    assert fake_twilio.attempts == 1
    assert "21211" in delivery.last_error
    assert "not a valid phone number" in delivery.last_error
    assert fake_twilio.messages() == []


async def test_wrong_credentials_fail_permanently(start_notifier: NotifierFactory, fake_twilio: FakeTwilio) -> None:
    env = provider_env(None, fake_twilio) | {"twilio_auth_token": "not-the-token"}
    n = await start_notifier(**env)
    resp = await n.stub.SendMessage(whatsapp_request("Hello."))
    delivery = await wait_final(n.stub, resp.delivery.name)
    assert delivery.status == FAILED
    assert "20003" in delivery.last_error
    assert fake_twilio.messages() == []


async def test_fake_twilio_posts_signed_status_callbacks(start_notifier: NotifierFactory) -> None:
    received: list[dict[str, str]] = []
    both = asyncio.Event()
    fake = FakeTwilio(callbacks=True)
    validator = RequestValidator(fake.auth_token)

    async def webhook(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        ok = validator.validate(str(request.url), form, request.headers.get("x-twilio-signature", ""))
        received.append({**form, "valid": str(ok)})
        if len(received) == 2:
            both.set()
        return Response(status_code=204 if ok else 403)

    receiver = LocalHttpServer(Starlette(routes=[Route("/webhooks/whatsapp/status", webhook, methods=["POST"])]))
    await receiver.start()
    await fake.start()
    try:
        n = await start_notifier(**provider_env(None, fake), gateway_base_url=receiver.url)
        resp = await n.stub.SendMessage(whatsapp_request("Callback check."))
        delivery = await wait_final(n.stub, resp.delivery.name)
        await asyncio.wait_for(both.wait(), 10)
    finally:
        await fake.stop()
        await receiver.stop()
    assert [(r["MessageSid"], r["MessageStatus"], r["valid"]) for r in received] == [
        (delivery.provider_message_ids[0], "sent", "True"),
        (delivery.provider_message_ids[0], "delivered", "True"),
    ]
