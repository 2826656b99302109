"""Migrations against the real PostgreSQL: ordered, applied once, edits of applied files refused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from fte_runtime.db import MigrationError, apply_migrations, create_pool
from fte_runtime.settings import DatabaseSettings
from pgvector import Vector
from pydantic import SecretStr

NewDatabase = Callable[[], Awaitable[str]]


def write_migrations(folder: Path) -> Path:
    folder.mkdir()
    (folder / "0001_init.sql").write_text("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(3));")
    (folder / "0002_names.sql").write_text("ALTER TABLE items ADD COLUMN name text NOT NULL DEFAULT '';")
    return folder


async def test_migrations_apply_once(new_database: NewDatabase, tmp_path: Path) -> None:
    dsn = await new_database()
    folder = write_migrations(tmp_path / "migrations")
    assert await apply_migrations(dsn, "svc", folder) == ["0001_init", "0002_names"]
    assert await apply_migrations(dsn, "svc", folder) == []
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM svc.schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [1, 2]
    finally:
        await conn.close()


async def test_concurrent_starts_apply_migrations_once(new_database: NewDatabase, tmp_path: Path) -> None:
    dsn = await new_database()
    folder = write_migrations(tmp_path / "migrations")
    results = await asyncio.gather(*(apply_migrations(dsn, "svc", folder) for _ in range(5)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 2]


async def test_edited_applied_migration_is_refused(new_database: NewDatabase, tmp_path: Path) -> None:
    dsn = await new_database()
    folder = write_migrations(tmp_path / "migrations")
    await apply_migrations(dsn, "svc", folder)
    (folder / "0001_init.sql").write_text("CREATE TABLE items (id int);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(dsn, "svc", folder)


async def test_badly_named_migration_is_refused(new_database: NewDatabase, tmp_path: Path) -> None:
    folder = write_migrations(tmp_path / "migrations")
    (folder / "3_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        await apply_migrations(await new_database(), "svc", folder)


async def test_pool_sees_own_schema_and_vectors(new_database: NewDatabase, tmp_path: Path) -> None:
    dsn = await new_database()
    await apply_migrations(dsn, "svc", write_migrations(tmp_path / "migrations"))
    settings = DatabaseSettings(database_url=SecretStr(dsn), database_pool_min=1, database_pool_max=2)
    pool = await create_pool(settings, "svc", application_name="test", vector=True)
    try:
        await pool.execute("INSERT INTO items (id, embedding) VALUES (1, $1)", [1.0, 0.0, 0.5])
        value = await pool.fetchval("SELECT embedding FROM items WHERE id = 1")
        assert isinstance(value, Vector)
        assert value.to_list() == [1.0, 0.0, 0.5]
    finally:
        await pool.close()
