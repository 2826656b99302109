"""Session fixtures that start the real servers once per test run, on free ports.

postgres         a PostgreSQL+pgvector server (PostgresServer); `new_database()` gives a fresh DB
kafka_bootstrap  the embedded broker, or the broker given with --kafka-bootstrap (Apache Kafka)
kafka_settings   a KafkaSettings for it (idempotence on for Apache Kafka)
new_database     async factory: a fresh, empty database's DSN, with pgvector available
tokens           bearer tokens for the principals in fte_stack.services.GRANTS
full_stack       every installed service behind Envoy (start takes a few seconds; use for e2e)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from fte_runtime import topics
from fte_runtime.kafka import ensure_topics
from fte_runtime.settings import KafkaSettings, TokenGrant

from fte_stack.broker import TansuBroker
from fte_stack.postgres import PostgresServer
from fte_stack.procs import free_port, scratch_dir
from fte_stack.services import GRANTS, READER_CACHE_DIR, token_grant
from fte_stack.stack import Stack, StackConfig


def pytest_configure(config: pytest.Config) -> None:
    # Agents built inside the test process read the same reader cache as the stack's agent.
    os.environ.setdefault("FTE_AGENT_READER_CACHE_DIR", str(READER_CACHE_DIR))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fte")
    group.addoption("--kafka-bootstrap", default=None, help="use this broker (Apache Kafka) instead of Tansu")
    group.addoption("--kafka-idempotence", action="store_true", help="the broker supports idempotent producers")
    group.addoption(
        "--scenario-people",
        type=int,
        default=12,
        help="people in the cross-channel identity scenario (the issue's full run: 60 or more)",
    )


@pytest.fixture(scope="session")
def stack_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    # Kept after a session with failures, for the services' logs.
    with scratch_dir("fte-test-", keep=lambda: request.session.testsfailed > 0) as root:
        yield root


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres(stack_root: Path) -> AsyncIterator[PostgresServer]:
    server = PostgresServer(stack_root / "postgres", free_port())
    await server.start()
    yield server
    await server.stop()


_db_counter = itertools.count()


@pytest.fixture(scope="session")
def new_database(postgres: PostgresServer) -> Callable[[], Awaitable[str]]:
    async def make() -> str:
        return await postgres.create_database(f"test_{next(_db_counter)}")

    return make


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka_bootstrap(request: pytest.FixtureRequest, stack_root: Path) -> AsyncIterator[str]:
    external: str | None = request.config.getoption("--kafka-bootstrap")
    if external:
        await ensure_topics(external, topics.ALL)
        yield external
        return
    broker = TansuBroker(free_port(), stack_root / "tansu.log")
    await broker.start()
    await ensure_topics(broker.bootstrap, topics.ALL)
    yield broker.bootstrap
    await broker.stop()


@pytest.fixture(scope="session")
def kafka_settings(request: pytest.FixtureRequest, kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_idempotence=bool(request.config.getoption("--kafka-idempotence")),
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
    )


@pytest.fixture(scope="session")
def tokens() -> dict[str, str]:
    return {principal: f"test-token-{principal}" for principal in GRANTS}


@pytest.fixture(scope="session")
def token_grants(tokens: dict[str, str]) -> dict[str, TokenGrant]:
    """`auth_tokens` for a service under test: every principal with its scopes."""
    return {tok: TokenGrant.model_validate(token_grant(p)) for p, tok in tokens.items()}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def full_stack(request: pytest.FixtureRequest, stack_root: Path) -> AsyncIterator[Stack]:
    external: str | None = request.config.getoption("--kafka-bootstrap")
    config = StackConfig.for_tests(
        stack_root / "stack",
        kafka_bootstrap=external,
        kafka_idempotence=bool(request.config.getoption("--kafka-idempotence")),
    )
    stack = Stack(config)
    async with stack:
        yield stack
