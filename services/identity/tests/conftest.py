"""An in-process identity server on a fresh database, reached over TCP with real tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from fte_identity.server import build
from fte_identity.settings import IdentitySettings
from fte_runtime.settings import TokenGrant
from identity_helpers import READER_TOKEN, Identity, StartIdentity  # type: ignore[import-not-found]


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def start_identity(
    new_database: Callable[[], Awaitable[str]], token_grants: dict[str, TokenGrant], tokens: dict[str, str]
) -> AsyncIterator[StartIdentity]:
    """Factory: a server on its own fresh database; settings may be overridden."""
    started: list[Identity] = []

    async def start(**overrides: Any) -> Identity:
        grants = {**token_grants, READER_TOKEN: TokenGrant(principal="identity-reader", scopes=["identity.read"])}
        fields: dict[str, Any] = {
            "database_url": await new_database(),
            "grpc_port": 0,
            "auth_tokens": grants,
            "shutdown_grace_seconds": 0.5,
            "database_pool_max": 20,
            # Nothing listens here: tests that publish start their own relay against the broker.
            "kafka_bootstrap": "127.0.0.1:9",
            **overrides,
        }
        settings = IdentitySettings(**fields)
        app = await build(settings)
        port = await app.server.start()
        identity = Identity(app, settings.database_url.get_secret_value(), f"127.0.0.1:{port}", None, [])
        started.append(identity)
        identity.stub = identity.client(tokens["staff"])
        return identity

    yield start
    for identity in started:
        for channel in identity.channels:
            await channel.close()
        await identity.app.server.stop()
        await identity.app.relay.close()
        await identity.app.pool.close()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def identity(start_identity: StartIdentity) -> Identity:
    """The shared server: tests use identifiers of their own so they do not see each other."""
    return await start_identity()
