"""The CloudNativePG bootstrap SQL (deploy/k8s/components/postgres-cnpg/cluster.yaml) run against
a real PostgreSQL+pgvector: every service's own migrations apply as its own role, and a role
cannot reach another service's schema."""

from __future__ import annotations

import importlib.resources
import importlib.util
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import yaml
from fte_runtime.db import apply_migrations

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "deploy" / "k8s" / "components" / "postgres-cnpg" / "cluster.yaml"
SERVICES = ("knowledge", "identity", "notifier", "agent", "gateway", "console")


def cluster_spec() -> dict[str, object]:
    [cluster] = [d for d in yaml.safe_load_all(CLUSTER.read_text()) if d and d["kind"] == "Cluster"]
    spec: dict[str, object] = cluster["spec"]
    return spec


def as_role(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest_asyncio.fixture(loop_scope="session")
async def bootstrapped(new_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A database set up as the operator does it: the bootstrap SQL as superuser, then each
    managed role given LOGIN and its password (what `managed.roles` reconciles)."""
    dsn = await new_database()
    spec = cluster_spec()
    bootstrap = spec["bootstrap"]
    assert isinstance(bootstrap, dict)
    statements: list[str] = bootstrap["initdb"]["postInitApplicationSQL"]
    managed = spec["managed"]
    assert isinstance(managed, dict)
    roles = {r["name"]: r for r in managed["roles"]}
    assert set(roles) == set(SERVICES)
    passwords = {name: secrets.token_hex(16) for name in roles}
    conn = await asyncpg.connect(dsn)
    try:
        for name in roles:  # roles are server-wide: a previous run's leftovers go first
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
        for statement in statements:
            await conn.execute(statement)
        for name, role in roles.items():
            assert role["login"] is True
            assert role["passwordSecret"]["name"] == f"{name}-postgres"
            await conn.execute(f"ALTER ROLE {name} LOGIN PASSWORD '{passwords[name]}'")
        yield dsn, passwords
    finally:
        for name in roles:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            await conn.execute(f"DROP OWNED BY {name}")
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
        await conn.close()


async def test_bootstrap_creates_the_vector_extension(bootstrapped: tuple[str, dict[str, str]]) -> None:
    dsn, passwords = bootstrapped
    conn = await asyncpg.connect(as_role(dsn, "knowledge", passwords["knowledge"]))
    try:
        assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        assert await conn.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector") == 1.0
    finally:
        await conn.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_service_migrations_apply_as_its_own_role(bootstrapped: tuple[str, dict[str, str]], service: str) -> None:
    if importlib.util.find_spec(f"fte_{service}") is None:
        pytest.skip(f"fte_{service} is not installed")
    migrations = importlib.resources.files(f"fte_{service}") / "migrations"
    dsn, passwords = bootstrapped
    role_dsn = as_role(dsn, service, passwords[service])
    applied = await apply_migrations(role_dsn, service, migrations)
    assert applied, f"fte_{service} has no migrations"
    assert await apply_migrations(role_dsn, service, migrations) == []


async def test_a_role_cannot_touch_another_services_schema(bootstrapped: tuple[str, dict[str, str]]) -> None:
    dsn, passwords = bootstrapped
    conn = await asyncpg.connect(as_role(dsn, "agent", passwords["agent"]))
    try:
        await conn.execute("CREATE TABLE agent.mine (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE identity.theirs (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE public.shared (id int)")
    finally:
        await conn.close()
