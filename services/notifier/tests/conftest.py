"""Fixtures: the local fake Gmail and Twilio servers, and the notifier (in-process or as a real
process) against the real PostgreSQL, with the real SDKs talking HTTP to the fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_notifier.server import Notifier
from fte_notifier.settings import NotifierSettings
from fte_runtime.grpc_client import connect
from fte_runtime.settings import TokenGrant
from fte_stack.fakes.gmail import FakeGmail
from fte_stack.fakes.twilio import FakeTwilio
from notifier_helpers import APPROVED_TEMPLATE, NotifierFactory, RunningNotifier  # type: ignore[import-not-found]


@pytest_asyncio.fixture(loop_scope="session")
async def fake_gmail() -> AsyncIterator[FakeGmail]:
    fake = FakeGmail("support@example.com")
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def start_notifier(
    new_database: Callable[[], Awaitable[str]], token_grants: dict[str, TokenGrant], tokens: dict[str, str]
) -> AsyncIterator[NotifierFactory]:
    """Start an in-process notifier on a fresh database; every one started is stopped at the end."""
    running: list[RunningNotifier] = []

    async def start(**overrides: Any) -> RunningNotifier:
        values: dict[str, Any] = {
            "grpc_port": 0,
            "auth_tokens": token_grants,
            "database_url": await new_database(),
            "kafka_enabled": False,
            "dispatch_poll_seconds": 0.1,
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "provider_timeout_seconds": 5.0,
            "lease_seconds": 5.0,
            "whatsapp_approved_templates": frozenset({APPROVED_TEMPLATE}),
            "gateway_base_url": "http://127.0.0.1:8080",
        }
        values.update(overrides)
        settings = NotifierSettings(**values)
        notifier = Notifier(settings)
        port = await notifier.start()
        channel = connect(f"127.0.0.1:{port}", token=tokens["agent"], default_timeout=10)
        handle = RunningNotifier(notifier, settings, channel, notifier_service_pb2_grpc.NotifierServiceStub(channel))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.close()
