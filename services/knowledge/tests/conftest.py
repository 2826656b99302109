"""Fixtures: a fresh database per service instance, the real gRPC server on a free port, and one
shared offline embedding model (loading it once keeps the suite quick)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from fte_knowledge.server import Knowledge
from fte_knowledge.settings import KnowledgeSettings
from fte_runtime.embeddings import Embedder, LocalMiniLM
from fte_runtime.grpc_client import connect
from fte_runtime.settings import TokenGrant
from knowledge_helpers import Client, StartKnowledge, Stub  # type: ignore[import-not-found]
from pydantic import SecretStr


@pytest.fixture(scope="session")
def local_model() -> LocalMiniLM:
    return LocalMiniLM()


@pytest_asyncio.fixture(loop_scope="session")
async def start_knowledge(
    new_database: Callable[[], Awaitable[str]],
    token_grants: dict[str, TokenGrant],
    local_model: LocalMiniLM,
) -> AsyncIterator[StartKnowledge]:
    """Starts a knowledge service (fresh database unless `database_url` is given); all are
    stopped at the end of the test."""
    started: list[Knowledge] = []

    async def start(
        *, embedder: Embedder | None = None, database_url: str | None = None, **overrides: Any
    ) -> Knowledge:
        dsn = database_url or await new_database()
        settings = KnowledgeSettings(
            grpc_port=0,
            database_url=SecretStr(dsn),
            auth_tokens=token_grants,
            log_json=False,
            shutdown_grace_seconds=1.0,
            **overrides,
        )
        knowledge = Knowledge(settings, embedder or (None if overrides.get("embedding_provider") else local_model))
        await knowledge.start()
        started.append(knowledge)
        return knowledge

    yield start
    for knowledge in reversed(started):
        await knowledge.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def knowledge(start_knowledge: StartKnowledge) -> Knowledge:
    service: Knowledge = await start_knowledge()
    return service


@pytest_asyncio.fixture(loop_scope="session")
async def client_for(knowledge: Knowledge, tokens: dict[str, str]) -> AsyncIterator[Client]:
    """A stub for the service as a given principal ("staff", "kb-reader", "gateway", ...)."""
    channels: list[grpc.aio.Channel] = []

    def make(principal: str) -> Stub:
        channel = connect(f"127.0.0.1:{knowledge.grpc.port}", token=tokens[principal], default_timeout=60.0)
        channels.append(channel)
        return Stub(channel)

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture
def staff(client_for: Client) -> Stub:
    return client_for("staff")
