"""`python -m fte_identity migrate` as an operator runs it: twice, the second a no-op."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import fte_identity
from identity_helpers import count_rows  # type: ignore[import-not-found]


async def test_migrate_command_applies_the_schema_once(new_database: Callable[[], Awaitable[str]]) -> None:
    dsn = await new_database()
    env = {**os.environ, "FTE_IDENTITY_DATABASE_URL": dsn, "FTE_IDENTITY_LOG_JSON": "false"}
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fte_identity", "migrate", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
    migrations = Path(fte_identity.__file__).parent / "migrations"
    assert await count_rows(dsn, "SELECT count(*) FROM identity.schema_migrations") == len(
        list(migrations.glob("*.sql"))
    )
    tables = await count_rows(
        dsn,
        """SELECT count(*) FROM information_schema.tables WHERE table_schema = 'identity'
           AND table_name IN ('customers', 'identifiers', 'merges', 'erasures', 'verification_codes', 'outbox')""",
    )
    assert tables == 6
