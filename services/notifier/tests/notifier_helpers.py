"""Helpers shared by the notifier's tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_pb2, notifier_service_pb2, notifier_service_pb2_grpc
from fte_notifier.server import Notifier
from fte_notifier.settings import NotifierSettings
from fte_runtime.errors import error_info
from fte_stack.fakes.gmail import FakeGmail
from fte_stack.fakes.twilio import FakeTwilio
from google.protobuf.timestamp_pb2 import Timestamp

APPROVED_TEMPLATE = "HX" + "a" * 32
CUSTOMER = "whatsapp:+14155552671"
TERMINAL = (
    common_pb2.DELIVERY_STATUS_SENT,
    common_pb2.DELIVERY_STATUS_DELIVERED,
    common_pb2.DELIVERY_STATUS_READ,
    common_pb2.DELIVERY_STATUS_FAILED,
)


@dataclass
class RunningNotifier:
    notifier: Notifier
    settings: NotifierSettings
    channel: grpc.aio.Channel
    stub: notifier_service_pb2_grpc.NotifierServiceAsyncStub
    closed: bool = field(default=False)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.channel.close()
            await self.notifier.stop()


def provider_env(gmail: FakeGmail | None, twilio: FakeTwilio | None) -> dict[str, Any]:
    """Settings that point the real SDKs at the fakes (absent fake = local mode for it)."""
    out: dict[str, Any] = {}
    if gmail is not None:
        out.update(gmail_access_token="fake-gmail-access-token", gmail_api_endpoint=gmail.url)
    if twilio is not None:
        out.update(
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=twilio.auth_token,
            twilio_api_base_url=twilio.url,
        )
    return out


NotifierFactory = Callable[..., Awaitable[RunningNotifier]]


def ago(**delta: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) - timedelta(**delta))
    return ts


def whatsapp_request(text: str, **kw: Any) -> notifier_service_pb2.SendMessageRequest:
    kw.setdefault("request_id", uuid.uuid4().hex)
    kw.setdefault("recipient", CUSTOMER)
    kw.setdefault("customer_last_message_time", ago(minutes=5))
    return notifier_service_pb2.SendMessageRequest(channel=common_pb2.CHANNEL_WHATSAPP, text_body=text, **kw)


def email_request(text: str, **kw: Any) -> notifier_service_pb2.SendMessageRequest:
    kw.setdefault("request_id", uuid.uuid4().hex)
    kw.setdefault("recipient", "customer@example.org")
    kw.setdefault("channel", common_pb2.CHANNEL_EMAIL)
    return notifier_service_pb2.SendMessageRequest(text_body=text, **kw)


async def wait_final(
    stub: notifier_service_pb2_grpc.NotifierServiceAsyncStub, name: str, timeout: float = 20.0
) -> notifier_pb2.Delivery:
    """The delivery once the dispatcher is done with it (sent or further, or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        delivery: notifier_pb2.Delivery = (
            await stub.GetDelivery(notifier_service_pb2.GetDeliveryRequest(name=name))
        ).delivery
        if delivery.status in TERMINAL:
            return delivery
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} still {delivery.status} after {timeout}s: {delivery.last_error}")
        await asyncio.sleep(0.05)


def reason_of(err: grpc.aio.AioRpcError) -> str:
    info = error_info(err)
    assert info is not None
    return str(info.reason)
