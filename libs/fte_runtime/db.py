"""PostgreSQL: asyncpg pools scoped to a service's own schema, and ordered SQL migrations.

Migrations are files `NNNN_name.sql` in the service's migrations folder. They run in one
transaction under an advisory lock, so replicas starting together apply them once; each applied
file's checksum is recorded and an edited, already-applied file stops the start.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import re
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

from fte_runtime.settings import DatabaseSettings

log = logging.getLogger("fte.db")

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


def _check_schema(schema: str) -> str:
    if not _SCHEMA.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def create_pool(
    settings: DatabaseSettings,
    schema: str,
    *,
    application_name: str,
    vector: bool = False,
    reset_on_release: bool = True,
    session_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool whose connections see the service's schema first. With `vector`, pgvector's types
    are registered (the extension must exist: a migration creates it).

    `reset_on_release=False` skips asyncpg's per-release reset round trip (RESET ALL, CLOSE ALL,
    UNLISTEN *, advisory unlock); only for services that keep no session state: no session-level
    SET, advisory locks, cursors or LISTEN outside a transaction.

    `session_settings` are sent when each connection opens (so they cost no round trip per query);
    RESET ALL returns to them, not to the server's defaults."""
    _check_schema(schema)

    async def init(conn: asyncpg.Connection) -> None:
        if vector:
            await register_vector(conn)

    async def keep_session(conn: asyncpg.Connection) -> None:
        return None

    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        server_settings={
            **(session_settings or {}),
            "search_path": f"{schema},public",
            "application_name": application_name,
        },
        init=init,
        **({} if reset_on_release else {"reset": keep_session}),
    )
    return pool


def _migration_files(directory: Traversable) -> list[tuple[int, str, str]]:
    found: list[tuple[int, str, str]] = []
    for entry in directory.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"migration file {entry.name!r} must be named NNNN_name.sql")
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


async def apply_migrations(dsn_or_conn: str | asyncpg.Connection, schema: str, directory: Traversable) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    _check_schema(schema)
    files = _migration_files(directory)
    conn: Any = await asyncpg.connect(dsn_or_conn) if isinstance(dsn_or_conn, str) else dsn_or_conn
    applied_now: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"fte-migrations:{schema}")
            # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists;
            # a role that was given only its own schema must still be able to start.
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
                await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET LOCAL search_path TO {schema}, public")
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
            }
            for version, name, sql in files:
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise MigrationError(f"migration {version:04d}_{name} changed after it was applied")
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    version,
                    name,
                    checksum,
                )
                applied_now.append(f"{version:04d}_{name}")
    finally:
        if isinstance(dsn_or_conn, str):
            await conn.close()
    if applied_now:
        log.info("migrations applied", extra={"schema": schema, "migrations": applied_now})
    return applied_now


async def migrate(settings: DatabaseSettings, schema: str, package: str) -> list[str]:
    """Apply the pending SQL migrations of `package`'s `migrations` folder to `schema`; the names
    applied (empty when up to date). What `python -m fte_<svc> migrate` and every start run."""
    directory = importlib.resources.files(package) / "migrations"
    return await apply_migrations(settings.database_url.get_secret_value(), schema, directory)


def print_applied(applied: list[str]) -> None:
    """The one report of a `migrate` command."""
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
