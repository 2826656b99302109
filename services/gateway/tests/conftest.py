"""Fixtures: the gateway served by uvicorn in the test loop against the real broker and
PostgreSQL, the local fake Gmail API and Google certs endpoint, and an in-test AgentService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fte.agent.v1 import agent_service_pb2_grpc
from fte_gateway.server import GatewayServer
from fte_gateway.settings import GatewaySettings
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration
from fte_runtime.settings import GrpcServerSettings, KafkaSettings, TokenGrant
from fte_stack.fakes.gmail import FakeGmail
from fte_stack.fakes.google_certs import FakeGoogleCerts
from gateway_helpers import (  # type: ignore[import-not-found]
    MAILBOX,
    PUSH_ACCOUNT,
    PUSH_AUDIENCE,
    TWILIO_TOKEN,
    EventLog,
    FakeAgentService,
    GatewayFactory,
    wait_ready,
)


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def fake_certs() -> AsyncIterator[FakeGoogleCerts]:
    fake = FakeGoogleCerts()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def fake_gmail() -> AsyncIterator[FakeGmail]:
    fake = FakeGmail(MAILBOX)
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def agent_service(token_grants: dict[str, TokenGrant]) -> AsyncIterator[tuple[FakeAgentService, str]]:
    servicer = FakeAgentService()
    # The fake keeps no quota counts, and the gateway's own principal has no quota.
    grants = {token: grant for token, grant in token_grants.items() if grant.quota is None}
    server = GrpcServer(
        GrpcServerSettings(grpc_port=0, auth_tokens=grants),
        domain="agent.fte",
        services=[
            ServiceRegistration(
                "fte.agent.v1.AgentService",
                servicer,
                agent_service_pb2_grpc.add_AgentServiceServicer_to_server,
                {"GetTicket": "tickets.read", "ListMessages": "tickets.read"},
            )
        ],
    )
    port = await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def event_log(kafka_bootstrap: str) -> AsyncIterator[EventLog]:
    log = EventLog(kafka_bootstrap)
    await log.start()
    yield log
    await log.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def start_gateway(  # noqa: PLR0917 - fixtures are positional
    kafka_settings: KafkaSettings,
    new_database: Callable[[], Awaitable[str]],
    fake_certs: FakeGoogleCerts,
    fake_gmail: FakeGmail,
    agent_service: tuple[FakeAgentService, str],
    tokens: dict[str, str],
) -> AsyncIterator[GatewayFactory]:
    """Start gateways (settings overridable); each is stopped at the end of the test."""
    running: list[GatewayServer] = []

    async def start(*, ready: bool = True, **overrides: Any) -> GatewayServer:
        values: dict[str, Any] = {
            "http_port": 0,
            "kafka_bootstrap": kafka_settings.kafka_bootstrap,
            "kafka_idempotence": kafka_settings.kafka_idempotence,
            "database_url": await new_database(),
            "agent_target": agent_service[1],
            "service_token": tokens["gateway"],
            "twilio_auth_token": TWILIO_TOKEN,
            "gmail_push_audience": PUSH_AUDIENCE,
            "gmail_push_service_account": PUSH_ACCOUNT,
            "google_certs_url": fake_certs.certs_url,
            "gmail_api_endpoint": fake_gmail.url,
            "gmail_address": MAILBOX,
            "gmail_sweep_seconds": 0,
            "log_json": False,
        }
        values.update(overrides)
        server = GatewayServer(GatewaySettings(**values))
        await server.start()
        running.append(server)
        if ready:
            await wait_ready(server.url)
        return server

    yield start
    for server in running:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(start_gateway: GatewayFactory) -> GatewayServer:
    server: GatewayServer = await start_gateway()
    return server


@pytest_asyncio.fixture(loop_scope="session")
async def client(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as c:
        yield c


@pytest.fixture
def agent(agent_service: tuple[FakeAgentService, str]) -> FakeAgentService:
    return agent_service[0]
