"""The gateway's own tables (schema `gateway`): the Gmail sync position and published message ids."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

SCHEMA = "gateway"


class GatewayStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def history_id(self, address: str) -> int | None:
        value = await self.pool.fetchval("SELECT history_id FROM gmail_mailbox WHERE email_address = $1", address)
        return int(value) if value is not None else None

    async def save_history_id(self, address: str, history_id: int, watch_expiration: datetime | None = None) -> None:
        """Only ever moves forward, so a slow sync cannot rewind a newer one's position."""
        await self.pool.execute(
            """INSERT INTO gmail_mailbox (email_address, history_id, watch_expiration) VALUES ($1, $2, $3)
               ON CONFLICT (email_address) DO UPDATE SET
                 history_id = GREATEST(gmail_mailbox.history_id, EXCLUDED.history_id),
                 watch_expiration = COALESCE(EXCLUDED.watch_expiration, gmail_mailbox.watch_expiration),
                 updated_at = now()""",
            address,
            history_id,
            watch_expiration,
        )

    async def unpublished(self, message_ids: Sequence[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT m FROM unnest($1::text[]) AS m WHERE NOT EXISTS "
            "(SELECT 1 FROM gmail_published p WHERE p.message_id = m)",
            list(message_ids),
        )
        return {r["m"] for r in rows}

    async def mark_published(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            await self.pool.execute(
                "INSERT INTO gmail_published (message_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                list(message_ids),
            )

    async def prune_published(self, days: int = 30) -> None:
        await self.pool.execute(
            "DELETE FROM gmail_published WHERE published_at < now() - make_interval(days => $1)", days
        )

    @asynccontextmanager
    async def sync_lock(self, address: str) -> AsyncIterator[None]:
        """One Gmail sync at a time across every gateway replica."""
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"fte-gateway-gmail:{address}")
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"fte-gateway-gmail:{address}")
