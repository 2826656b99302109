"""The API: bad input refused with the right status and reason and no attempt; idempotency under
concurrent duplicates; listing; local mode and the `outbox` command."""

from __future__ import annotations

import asyncio
import sys
import uuid

import grpc
import pytest
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_pb2, notifier_service_pb2, notifier_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_stack.fakes.gmail import FakeGmail
from fte_stack.fakes.twilio import FakeTwilio
from notifier_helpers import (  # type: ignore[import-not-found]
    NotifierFactory,
    ago,
    email_request,
    provider_env,
    reason_of,
    wait_final,
    whatsapp_request,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

BAD_REQUESTS = [
    ("unknown channel", email_request("hi", channel=common_pb2.CHANNEL_UNSPECIFIED), INVALID, "UNKNOWN_CHANNEL"),
    ("channel out of range", email_request("hi", channel=42), INVALID, "UNKNOWN_CHANNEL"),
    ("bad email", email_request("hi", recipient="not-an-address"), INVALID, "INVALID_RECIPIENT"),
    ("phone for email", email_request("hi", recipient="whatsapp:+14155552671"), INVALID, "INVALID_RECIPIENT"),
    ("no whatsapp prefix", whatsapp_request("hi", recipient="+14155552671"), INVALID, "INVALID_RECIPIENT"),
    ("impossible number", whatsapp_request("hi", recipient="whatsapp:+1415"), INVALID, "INVALID_RECIPIENT"),
    ("empty body", email_request(""), INVALID, "EMPTY_BODY"),
    ("blank body", whatsapp_request("  \n "), INVALID, "EMPTY_BODY"),
    ("oversized body", email_request("x" * 20_001), INVALID, "BODY_TOO_LONG"),
    ("no request id", email_request("hi", request_id=""), INVALID, "REQUEST_ID_REQUIRED"),
    (
        "bad thread id",
        email_request("hi", reply_to=common_pb2.EmailThread(message_id="<a@b>", gmail_thread_id="x y")),
        INVALID,
        "INVALID_ARGUMENT",
    ),
    ("header injection", email_request("hi", subject="Hi\r\nBcc: x@example.org"), INVALID, "INVALID_ARGUMENT"),
    (
        "bad thread",
        email_request("hi", reply_to=common_pb2.EmailThread(message_id="<a@b>", references=["no brackets or at"])),
        INVALID,
        "INVALID_ARGUMENT",
    ),
    ("long request id", email_request("hi", request_id="r" * 201), INVALID, "REQUEST_ID_TOO_LONG"),
    (
        "window closed, no template",
        whatsapp_request("hi", customer_last_message_time=ago(hours=25)),
        PRECONDITION,
        "WHATSAPP_WINDOW_CLOSED",
    ),
    (
        "window unknown, no template",
        whatsapp_request("hi", customer_last_message_time=None),
        PRECONDITION,
        "WHATSAPP_WINDOW_CLOSED",
    ),
    (
        "unapproved template",
        whatsapp_request(
            "hi",
            customer_last_message_time=ago(days=3),
            template=notifier_pb2.WhatsAppTemplate(content_sid="HX" + "f" * 32),
        ),
        PRECONDITION,
        "TEMPLATE_NOT_APPROVED",
    ),
]


async def test_bad_requests_are_refused_and_nothing_is_attempted(
    start_notifier: NotifierFactory, fake_gmail: FakeGmail, fake_twilio: FakeTwilio
) -> None:
    n = await start_notifier(**provider_env(fake_gmail, fake_twilio))
    for label, request, code, reason in BAD_REQUESTS:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await n.stub.SendMessage(request)
        assert caught.value.code() == code, label
        assert reason_of(caught.value) == reason, label
        assert caught.value.details(), label
    listed = await n.stub.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest())
    assert list(listed.deliveries) == []
    await asyncio.sleep(0.3)  # a dispatcher poll would have picked anything up
    assert fake_twilio.attempts == 0
    assert fake_gmail.state.requests == []


async def test_window_closed_message_says_why(start_notifier: NotifierFactory) -> None:
    n = await start_notifier()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await n.stub.SendMessage(whatsapp_request("hi", customer_last_message_time=ago(hours=25)))
    assert "24-hour window is closed" in (caught.value.details() or "")


async def test_concurrent_duplicates_deliver_once(
    start_notifier: NotifierFactory, fake_twilio: FakeTwilio, fake_gmail: FakeGmail
) -> None:
    n = await start_notifier(**provider_env(fake_gmail, fake_twilio))
    wa = whatsapp_request("Your order has shipped.", request_id=f"dup-{uuid.uuid4().hex}")
    mail = email_request("Your order has shipped.", subject="Shipped", request_id=f"dup-{uuid.uuid4().hex}")
    # Separate channels, so the duplicates really race on the server.
    channels = [connect(f"127.0.0.1:{n.notifier.grpc.port}", token=None) for _ in range(4)]
    try:
        stubs = [notifier_service_pb2_grpc.NotifierServiceStub(c) for c in channels]
        calls = [stubs[i % 4].SendMessage(req, metadata=_auth(n)) for i in range(40) for req in (wa, mail)]
        responses = await asyncio.gather(*calls)
    finally:
        for c in channels:
            await c.close()
    for req in (wa, mail):
        mine = [r for r in responses if r.delivery.request_id == req.request_id]
        assert len(mine) == 40
        assert len({r.delivery.name for r in mine}) == 1
        assert sum(not r.duplicate for r in mine) == 1
        delivery = await wait_final(n.stub, mine[0].delivery.name)
        assert delivery.status == common_pb2.DELIVERY_STATUS_SENT
    await asyncio.sleep(0.5)  # give a wrongly queued twin time to go out
    assert len(fake_twilio.messages()) == 1
    assert len(fake_gmail.sent()) == 1
    listed = await n.stub.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest())
    assert len(listed.deliveries) == 2


def _auth(n: object) -> tuple[tuple[str, str], ...]:
    token = next(t for t, g in n.settings.auth_tokens.items() if g.principal == "agent")  # type: ignore[attr-defined]
    return (("authorization", f"Bearer {token}"),)


async def test_request_id_reused_for_another_message_is_refused(start_notifier: NotifierFactory) -> None:
    n = await start_notifier()
    await n.stub.SendMessage(email_request("first", request_id="same-id"))
    again = await n.stub.SendMessage(email_request("first", request_id="same-id"))
    assert again.duplicate
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await n.stub.SendMessage(email_request("second", request_id="same-id"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"


async def test_scopes_are_enforced(start_notifier: NotifierFactory, tokens: dict[str, str]) -> None:
    n = await start_notifier()
    channel = connect(f"127.0.0.1:{n.notifier.grpc.port}", token=tokens["kb-reader"])
    try:
        stub = notifier_service_pb2_grpc.NotifierServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendMessage(email_request("hi"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListDeliveries(notifier_service_pb2.ListDeliveriesRequest())
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()


async def test_list_pages_newest_first_with_filters(start_notifier: NotifierFactory) -> None:
    n = await start_notifier()
    names = []
    for i in range(5):
        resp = await n.stub.SendMessage(email_request(f"message {i}", ticket_id="T-list"))
        names.append(resp.delivery.name)
    await n.stub.SendMessage(whatsapp_request("other ticket", ticket_id="T-other"))
    seen: list[str] = []
    token = ""
    while True:
        page = await n.stub.ListDeliveries(
            notifier_service_pb2.ListDeliveriesRequest(ticket_id="T-list", page_size=2, page_token=token)
        )
        seen += [d.name for d in page.deliveries]
        token = page.next_page_token
        if not token:
            break
    assert seen == names[::-1]
    only_wa = await n.stub.ListDeliveries(
        notifier_service_pb2.ListDeliveriesRequest(channel=common_pb2.CHANNEL_WHATSAPP)
    )
    assert [d.text_body for d in only_wa.deliveries] == ["other ticket"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await n.stub.ListDeliveries(
            notifier_service_pb2.ListDeliveriesRequest(ticket_id="T-other", page_token=token or "x")
        )
    assert caught.value.code() == INVALID
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await n.stub.GetDelivery(notifier_service_pb2.GetDeliveryRequest(name=f"deliveries/{uuid.uuid4()}"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_local_mode_keeps_everything_in_the_outbox(start_notifier: NotifierFactory) -> None:
    n = await start_notifier()  # no provider credentials
    wa = await n.stub.SendMessage(whatsapp_request("Local hello. " * 200, ticket_id="T-local"))
    mail = await n.stub.SendMessage(email_request("Local email.", subject="Local", ticket_id="T-local"))
    for resp in (wa, mail):
        delivery = await wait_final(n.stub, resp.delivery.name)
        assert delivery.status == common_pb2.DELIVERY_STATUS_SENT
        assert delivery.local_only
        assert len(delivery.provider_message_ids) == delivery.part_count
        assert all(pid.startswith("local-") for pid in delivery.provider_message_ids)
    assert (
        await n.stub.GetDelivery(notifier_service_pb2.GetDeliveryRequest(name=wa.delivery.name))
    ).delivery.part_count == 2

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fte_notifier",
        "outbox",
        "--limit",
        "5",
        env={"FTE_NOTIFIER_DATABASE_URL": n.settings.database_url.get_secret_value(), "PATH": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "(2 deliveries)" in text
    assert wa.delivery.name.removeprefix("deliveries/") in text
    assert "whatsapp" in text
    assert "email" in text
    assert text.count(" yes ") == 2  # both local_only
