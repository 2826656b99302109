"""The agent's start when its broker is unreachable: the start fails and nothing stays open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiokafka.errors import KafkaConnectionError
from fte_agent.server import Agent
from fte_agent.settings import AgentSettings
from pydantic import SecretStr


async def test_a_failed_start_closes_the_pool_and_channels(new_database: Callable[[], Awaitable[str]]) -> None:
    agent = Agent(
        AgentSettings(
            grpc_port=0,
            database_url=SecretStr(await new_database()),
            kafka_bootstrap="127.0.0.1:9",  # nothing listens: the producer cannot start
        )
    )
    with pytest.raises(KafkaConnectionError):
        await agent.start()
    assert agent.pool.is_closing()
