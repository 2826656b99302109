"""Helpers shared by the agent's tests: events, publishing, and waiting for replies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte_runtime import envelope

T = TypeVar("T")

CHANNELS = {
    "email": common_pb2.CHANNEL_EMAIL,
    "whatsapp": common_pb2.CHANNEL_WHATSAPP,
    "web_form": common_pb2.CHANNEL_WEB_FORM,
}


@dataclass(frozen=True)
class Mesh:
    knowledge: str
    identity: str
    notifier: str


def phone_for(seed: str) -> str:
    """A valid North American number (exchange 200-999) derived from `seed`."""
    n = int(uuid.uuid5(uuid.NAMESPACE_OID, seed).int % 8_000_000) + 2_000_000
    return f"+1415{n:07d}"


def message(
    channel: str,
    text: str,
    *,
    who: str | None = None,
    subject: str = "",
    name: str = "Alex Morgan",
    message_id: str | None = None,
    ticket_reference: str = "",
) -> tuple[message_events_pb2.MessageReceived, str]:
    """A MessageReceived as the gateway publishes it, and its record key."""
    who = who or uuid.uuid4().hex[:10]
    msg = message_events_pb2.MessageReceived(
        channel=CHANNELS[channel],
        channel_message_id=message_id or f"{channel}-{uuid.uuid4().hex}",
        display_name=name,
        subject=subject,
        text_body=text,
    )
    msg.received_time.FromDatetime(datetime.now(UTC))
    if channel == "whatsapp":
        phone = phone_for(who)
        msg.sender.whatsapp_address = f"whatsapp:{phone}"
        msg.sender.phone = phone
        key = msg.sender.whatsapp_address
    else:
        msg.sender.email = f"{who}@customer.example"
        key = msg.sender.email
        if channel == "email":
            msg.sender.email_authenticated = True  # Gmail's authentication passed, as for ordinary mail
            msg.email_thread.message_id = f"<{uuid.uuid4().hex}@mail.customer.example>"
            msg.email_thread.gmail_thread_id = uuid.uuid4().hex[:16]
    if channel == "web_form":
        msg.web_form.category = common_pb2.CATEGORY_GENERAL
        msg.web_form.priority = common_pb2.PRIORITY_MEDIUM
        msg.web_form.ticket_reference = ticket_reference or f"TL-{uuid.uuid4().hex[:8].upper()}"
    return msg, key


async def publish(producer: AIOKafkaProducer, topic: str, msg: Any, key: str) -> None:
    value, headers = envelope.encode(msg, source="//gateway.test")
    await producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
