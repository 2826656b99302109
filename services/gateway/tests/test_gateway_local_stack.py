"""Local mode (`make run`): the stack runs the fake mailbox and certs endpoint, and mail delivered
to the fake mailbox reaches Kafka through a signed push to the gateway process."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from fte.events.v1 import message_events_pb2
from fte_runtime import envelope, topics
from fte_stack.fakes.gmail import build_email
from fte_stack.stack import Stack, StackConfig

pytestmark = pytest.mark.kafka


async def test_stack_wires_the_gateway_to_the_local_providers(stack_root: Path) -> None:
    stack = Stack(StackConfig.for_tests(stack_root / "gateway-local-mode", services=["gateway"]))
    async with stack:
        assert stack.info is not None
        assert stack.providers is not None
        assert stack.info.extra["gmail_api_url"] == stack.providers.gmail.url
        consumer = AIOKafkaConsumer(
            topics.TICKETS_INCOMING,
            bootstrap_servers=stack.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id="local-stack-test",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        try:
            raw = build_email(sender="lin@example.net", to="support@example.com", subject="Hi", text="Local hello")
            request = urllib.request.Request(  # the demo's way in: HTTP to the fake mailbox
                stack.providers.gmail.url + "_fake/inbox", data=raw, method="POST"
            )
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
            async with asyncio.timeout(30):
                record = await consumer.getone()
        finally:
            await consumer.stop()
    event = envelope.decode(record.value, record.headers, envelope.type_map(message_events_pb2.MessageReceived))
    assert record.key == b"email:lin@example.net"
    assert isinstance(event.message, message_events_pb2.MessageReceived)
    assert event.message.text_body == "Local hello"
