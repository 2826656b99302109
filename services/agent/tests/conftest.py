"""Fixtures: the real knowledge (with the sample Tasklane KB and real embeddings), identity and
notifier services in this process on loopback ports, and agents started against them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from agent_helpers import Mesh  # type: ignore[import-not-found]
from fte_agent.server import RunningAgent
from fte_agent.settings import AgentSettings
from fte_identity.server import build as build_identity
from fte_identity.settings import IdentitySettings
from fte_knowledge.importer import import_path
from fte_knowledge.server import Knowledge
from fte_knowledge.settings import KnowledgeSettings
from fte_notifier.server import Notifier
from fte_notifier.settings import NotifierSettings
from fte_runtime.kafka import ensure_topics
from fte_runtime.settings import KafkaSettings, TokenGrant
from pydantic import SecretStr

SAMPLE_KB = Path(__file__).resolve().parents[2] / "knowledge" / "sample_kb"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def knowledge_target(
    new_database: Callable[[], Awaitable[str]], token_grants: dict[str, TokenGrant]
) -> AsyncIterator[str]:
    settings = KnowledgeSettings(grpc_port=0, auth_tokens=token_grants, database_url=SecretStr(await new_database()))
    counts, rejected = await import_path(settings, SAMPLE_KB, progress=False)
    assert rejected == 0
    assert sum(counts.values()) >= 50
    knowledge = Knowledge(settings)
    port = await knowledge.start()
    yield f"127.0.0.1:{port}"
    await knowledge.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mesh(
    knowledge_target: str,
    new_database: Callable[[], Awaitable[str]],
    token_grants: dict[str, TokenGrant],
    kafka_settings: KafkaSettings,
) -> AsyncIterator[Mesh]:
    """Knowledge, identity and notifier (local delivery, outcomes relayed to Kafka)."""
    identity_settings = IdentitySettings(
        grpc_port=0,
        auth_tokens=token_grants,
        database_url=SecretStr(await new_database()),
        kafka_bootstrap=kafka_settings.kafka_bootstrap,
    )
    identity = await build_identity(identity_settings)
    identity_port = await identity.server.start()
    notifier = Notifier(
        NotifierSettings(
            grpc_port=0,
            auth_tokens=token_grants,
            database_url=SecretStr(await new_database()),
            kafka_bootstrap=kafka_settings.kafka_bootstrap,
            kafka_session_timeout_ms=kafka_settings.kafka_session_timeout_ms,
            kafka_heartbeat_interval_ms=kafka_settings.kafka_heartbeat_interval_ms,
            dispatch_poll_seconds=0.1,
            # A group of its own: on a broker shared with the full stack (the Apache Kafka run),
            # the default group would split the stack's delivery statuses with this notifier.
            status_consumer_group=f"notifier-mesh-{uuid.uuid4().hex[:8]}",
        )
    )
    notifier_port = await notifier.start()
    yield Mesh(knowledge_target, f"127.0.0.1:{identity_port}", f"127.0.0.1:{notifier_port}")
    await notifier.stop()
    await identity.server.stop()
    await identity.relay.close()
    await identity.pool.close()


StartAgent = Callable[..., Awaitable[RunningAgent]]


@pytest_asyncio.fixture(loop_scope="session")
async def start_agent(
    mesh: Mesh,
    new_database: Callable[[], Awaitable[str]],
    token_grants: dict[str, TokenGrant],
    tokens: dict[str, str],
    kafka_settings: KafkaSettings,
) -> AsyncIterator[StartAgent]:
    """Start an in-process agent on a fresh database and its own incoming topic."""
    running: list[RunningAgent] = []

    async def start(**overrides: Any) -> RunningAgent:
        topic = overrides.pop("incoming_topic", None) or f"test.incoming.{uuid.uuid4().hex[:8]}"
        await ensure_topics(kafka_settings.kafka_bootstrap, [topic], partitions=3)
        values: dict[str, Any] = {
            "grpc_port": 0,
            "auth_tokens": token_grants,
            "database_url": await new_database(),
            "kafka_bootstrap": kafka_settings.kafka_bootstrap,
            "kafka_session_timeout_ms": kafka_settings.kafka_session_timeout_ms,
            "kafka_heartbeat_interval_ms": kafka_settings.kafka_heartbeat_interval_ms,
            "knowledge_target": mesh.knowledge,
            "identity_target": mesh.identity,
            "notifier_target": mesh.notifier,
            "service_token": tokens["agent"],
            "consumer_group": f"agent-{uuid.uuid4().hex[:8]}",
            "incoming_topic": topic,
        }
        values.update(overrides)
        agent = await RunningAgent.start(AgentSettings(**values))
        running.append(agent)
        return agent

    yield start
    for agent in running:
        await agent.stop()
