"""Customers and identifiers in the `identity` schema: every SQL statement of the service.

A `Session` runs statements on one connection and returns typed, frozen rows (rows.py); it
decides nothing. The rules are in domain.py and the operations that put statements and rules
together, one transaction each, in customers.py.

Ownership of an identifier is the unique index on verified (kind, value): concurrent
resolve-or-create of one new identifier lets exactly one transaction insert it, and the others
roll back their new customer and read the winner. Unverified rows are claims: they own nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from fte_runtime.identifiers import Normalized
from google.protobuf.message import Message

from fte_identity import outbox
from fte_identity.rows import (
    CustomerRow,
    CustomerState,
    IdentifierRow,
    LinkedIdentifier,
    MergeRow,
    PendingCode,
    StoredCode,
)

__all__ = ["RETRYABLE", "CustomerRow", "IdentifierRow", "MergeRow", "Session", "Store", "UniqueViolation"]

# Another transaction proved the same identifier first (the unique index on verified rows).
UniqueViolation = asyncpg.UniqueViolationError
# Lost races that a fresh read settles: another resolve took the identifier, a deadlock.
RETRYABLE = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

_CUSTOMER_COLUMNS = "id, display_name, state, merged_into, create_time, update_time"
_IDENTIFIER_COLUMNS = """
    i.customer_id, i.kind, i.value, i.raw_value, i.verified, i.evidence, i.create_time,
    (NOT i.verified AND EXISTS (
        SELECT 1 FROM identifiers o WHERE o.kind = i.kind AND o.value = i.value AND o.verified
          AND o.customer_id <> i.customer_id)) AS contested,
    (SELECT v.expire_time FROM verification_codes v
      WHERE v.identifier_id = i.id AND v.used_time IS NULL AND NOT v.superseded
        AND v.attempts < v.max_attempts AND v.expire_time > now()
      ORDER BY v.id DESC LIMIT 1) AS verification_expire_time"""
_IDENTIFIERS = f"""SELECT {_IDENTIFIER_COLUMNS}
    FROM identifiers i WHERE i.customer_id = ANY($1::uuid[]) ORDER BY i.create_time, i.id"""  # noqa: S608
# The customers holding any of the given identifiers verified, each with all its identifiers, in
# one statement (one round trip and one snapshot): a resolve of known identifiers reads only this.
# One row per identifier; the customer's columns repeat, prefixed c_.
_OWNING_CUSTOMERS = f"""SELECT c.id AS c_id, c.display_name AS c_display_name, c.state AS c_state,
           c.merged_into AS c_merged_into, c.create_time AS c_create_time, c.update_time AS c_update_time,
           {_IDENTIFIER_COLUMNS}
    FROM customers c JOIN identifiers i ON i.customer_id = c.id
    WHERE c.id IN (
        SELECT o.customer_id FROM identifiers o
        JOIN unnest($1::smallint[], $2::text[]) AS q(kind, value) ON o.kind = q.kind AND o.value = q.value
        WHERE o.verified)
    ORDER BY i.create_time, i.id"""  # noqa: S608
_LOCK_SHARE = "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR SHARE"
_LOCK_UPDATE = "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR UPDATE"


def _identifier(r: Any) -> IdentifierRow:
    return IdentifierRow(
        r["kind"],
        r["value"],
        r["raw_value"],
        r["verified"],
        r["evidence"],
        r["create_time"],
        r["contested"],
        r["verification_expire_time"],
    )


def _state(row: Any) -> CustomerState:
    return CustomerState(row["id"], row["state"], row["merged_into"])


class Session:
    """The statements, on one connection (inside a transaction when the caller opened one)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def transaction(self) -> Any:
        return self.conn.transaction()

    # -- read ----------------------------------------------------------------------------------

    async def customers(self, ids: Sequence[uuid.UUID]) -> list[CustomerRow]:
        """The customers in the order given (missing ones left out), each with its identifiers."""
        if not ids:
            return []
        rows = await self.conn.fetch(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ANY($1::uuid[])",  # noqa: S608
            list(ids),
        )
        return await self._with_identifiers(rows, order=list(ids))

    async def customer(self, customer_id: uuid.UUID) -> CustomerRow | None:
        found = await self.customers([customer_id])
        return found[0] if found else None

    async def _with_identifiers(
        self, rows: Sequence[Any], order: Sequence[uuid.UUID] | None = None
    ) -> list[CustomerRow]:
        by_id: dict[uuid.UUID, list[IdentifierRow]] = {r["id"]: [] for r in rows}
        if by_id:
            for r in await self.conn.fetch(_IDENTIFIERS, list(by_id)):
                by_id[r["customer_id"]].append(_identifier(r))
        customers = {r["id"]: CustomerRow(**dict(r), identifiers=tuple(by_id[r["id"]])) for r in rows}
        keys = order if order is not None else [r["id"] for r in rows]
        return [customers[k] for k in keys if k in customers]

    async def page(
        self, size: int, after: tuple[datetime, uuid.UUID] | None, ident: Normalized | None
    ) -> tuple[list[CustomerRow], bool]:
        """Customers not merged away, newest first, after the position; with whether more follow."""
        rows = await self.conn.fetch(
            f"""SELECT {_CUSTOMER_COLUMNS} FROM customers c
                WHERE c.state <> 'merged'
                  AND ($1::smallint IS NULL OR EXISTS (
                        SELECT 1 FROM identifiers i WHERE i.customer_id = c.id AND i.kind = $1
                          AND i.value = $2 AND i.verified))
                  AND ($3::timestamptz IS NULL OR (c.create_time, c.id) < ($3, $4::uuid))
                ORDER BY c.create_time DESC, c.id DESC LIMIT $5""",  # noqa: S608
            ident.kind if ident else None,
            ident.value if ident else None,
            after[0] if after else None,
            after[1] if after else None,
            size + 1,
        )
        return await self._with_identifiers(rows[:size]), len(rows) > size

    async def owning_customers(
        self, idents: Sequence[Normalized]
    ) -> tuple[dict[tuple[int, str], uuid.UUID], dict[uuid.UUID, CustomerRow]]:
        """The verified owner of each identifier that has one, and those owners with their
        identifiers."""
        rows = await self.conn.fetch(_OWNING_CUSTOMERS, [i.kind for i in idents], [i.value for i in idents])
        wanted = {(i.kind, i.value) for i in idents}
        owners: dict[tuple[int, str], uuid.UUID] = {}
        columns: dict[uuid.UUID, Any] = {}
        held: dict[uuid.UUID, list[IdentifierRow]] = {}
        for r in rows:
            ident = _identifier(r)
            if ident.verified and ident.key in wanted:
                owners[ident.key] = r["c_id"]
            columns.setdefault(r["c_id"], r)
            held.setdefault(r["c_id"], []).append(ident)
        customers = {
            cid: CustomerRow(
                cid,
                r["c_display_name"],
                r["c_state"],
                r["c_merged_into"],
                r["c_create_time"],
                r["c_update_time"],
                tuple(held[cid]),
            )
            for cid, r in columns.items()
        }
        return owners, customers

    async def verified_owner(self, ident: Normalized) -> uuid.UUID | None:
        """The customer holding the identifier verified, if any (at most one: a unique index)."""
        owner: uuid.UUID | None = await self.conn.fetchval(
            "SELECT customer_id FROM identifiers WHERE kind = $1 AND value = $2 AND verified", ident.kind, ident.value
        )
        return owner

    # -- customers -----------------------------------------------------------------------------

    async def lock(self, customer_id: uuid.UUID, *, share: bool = False) -> CustomerState | None:
        row = await self.conn.fetchrow(_LOCK_SHARE if share else _LOCK_UPDATE, customer_id)
        return None if row is None else _state(row)

    async def lock_all(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CustomerState]:
        """Lock the customers for update in id order, so two merges of one pair cannot deadlock."""
        rows = await self.conn.fetch(
            "SELECT id, state, merged_into FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", list(ids)
        )
        return {r["id"]: _state(r) for r in rows}

    async def create_customer(self, customer_id: uuid.UUID, display_name: str) -> None:
        await self.conn.execute("INSERT INTO customers (id, display_name) VALUES ($1, $2)", customer_id, display_name)

    async def rename(self, customer_id: uuid.UUID, display_name: str) -> None:
        await self.conn.execute(
            """UPDATE customers SET display_name = $2, update_time = now()
               WHERE id = $1 AND display_name IS DISTINCT FROM $2""",
            customer_id,
            display_name,
        )

    # -- identifiers ---------------------------------------------------------------------------

    async def insert_verified(self, customer_id: uuid.UUID, ident: Normalized, evidence: int) -> bool:
        """A new verified row; False when any row conflicts (another owner, or a claim the customer
        already holds)."""
        inserted = await self.conn.fetchval(
            """INSERT INTO identifiers (customer_id, kind, value, raw_value, verified, evidence, verify_time)
               VALUES ($1, $2, $3, $4, true, $5, now()) ON CONFLICT DO NOTHING RETURNING id""",
            customer_id,
            ident.kind,
            ident.value,
            ident.raw_value,
            int(evidence),
        )
        return inserted is not None

    async def upgrade_claim(self, customer_id: uuid.UUID, ident: Normalized, evidence: int) -> None:
        await self.conn.execute(
            """UPDATE identifiers SET verified = true, evidence = $4, verify_time = now()
               WHERE customer_id = $1 AND kind = $2 AND value = $3""",
            customer_id,
            ident.kind,
            ident.value,
            int(evidence),
        )

    async def claim(self, customer_id: uuid.UUID, ident: Normalized, evidence: int) -> None:
        """Record a claim; nothing when the customer already has a row for the identifier."""
        await self.conn.execute(
            """INSERT INTO identifiers (customer_id, kind, value, raw_value, verified, evidence)
               VALUES ($1, $2, $3, $4, false, $5) ON CONFLICT (customer_id, kind, value) DO NOTHING""",
            customer_id,
            ident.kind,
            ident.value,
            ident.raw_value,
            int(evidence),
        )

    async def linked(self, customer_id: uuid.UUID, ident: Normalized) -> LinkedIdentifier | None:
        """The customer's row for the identifier, locked for update."""
        row = await self.conn.fetchrow(
            """SELECT id, verified FROM identifiers WHERE customer_id = $1 AND kind = $2 AND value = $3
               FOR UPDATE""",
            customer_id,
            ident.kind,
            ident.value,
        )
        return None if row is None else LinkedIdentifier(row["id"], row["verified"])

    async def verify_linked(self, identifier_id: int, evidence: int) -> None:
        await self.conn.execute(
            "UPDATE identifiers SET verified = true, evidence = $2, verify_time = now() WHERE id = $1",
            identifier_id,
            int(evidence),
        )

    # -- verification codes --------------------------------------------------------------------

    async def codes_last_hour(self, ident: Normalized) -> int:
        """Codes sent for the (kind, value) in the last hour, whichever customer claims it."""
        recent: int = await self.conn.fetchval(
            """SELECT count(*) FROM verification_codes v JOIN identifiers i ON i.id = v.identifier_id
               WHERE i.kind = $1 AND i.value = $2 AND v.create_time > now() - interval '1 hour'""",
            ident.kind,
            ident.value,
        )
        return recent

    async def supersede_codes(self, identifier_id: int) -> None:
        await self.conn.execute(
            "UPDATE verification_codes SET superseded = true WHERE identifier_id = $1 AND used_time IS NULL",
            identifier_id,
        )

    async def add_code(
        self, identifier_id: int, code_hash: bytes, salt: bytes, ttl: timedelta, max_attempts: int
    ) -> datetime:
        """Store a code's hash; its expiry time, by the database's clock."""
        expire_time: datetime = await self.conn.fetchval(
            """INSERT INTO verification_codes (identifier_id, code_hash, salt, expire_time, max_attempts)
               VALUES ($1, $2, $3, now() + $4::interval, $5) RETURNING expire_time""",
            identifier_id,
            code_hash,
            salt,
            ttl,
            max_attempts,
        )
        return expire_time

    async def newest_code(self, identifier_id: int) -> StoredCode | None:
        """The identifier's newest code, locked for update."""
        row = await self.conn.fetchrow(
            """SELECT id, code_hash, salt, attempts, max_attempts, used_time IS NOT NULL AS used,
                      superseded, expire_time <= now() AS expired
               FROM verification_codes WHERE identifier_id = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE""",
            identifier_id,
        )
        if row is None:
            return None
        pending = PendingCode(
            row["code_hash"],
            row["salt"],
            row["attempts"],
            row["max_attempts"],
            row["used"],
            row["superseded"],
            row["expired"],
        )
        return StoredCode(row["id"], pending)

    async def count_attempt(self, code_id: int) -> None:
        await self.conn.execute("UPDATE verification_codes SET attempts = attempts + 1 WHERE id = $1", code_id)

    async def use_code(self, code_id: int) -> None:
        await self.conn.execute("UPDATE verification_codes SET used_time = now() WHERE id = $1", code_id)

    async def move_codes(self, identifier_id: int, owner: uuid.UUID, ident: Normalized) -> None:
        """Re-attach the identifier's codes to the owner's row for the same identifier."""
        await self.conn.execute(
            """UPDATE verification_codes SET identifier_id = (
                   SELECT id FROM identifiers WHERE customer_id = $2 AND kind = $3 AND value = $4)
               WHERE identifier_id = $1""",
            identifier_id,
            owner,
            ident.kind,
            ident.value,
        )

    # -- merge and erase -----------------------------------------------------------------------

    async def lock_request_id(self, request_id: str) -> None:
        """Serialise merges that share a request id until the transaction ends."""
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"identity-merge:{request_id}")

    async def merge_by_request(self, request_id: str) -> MergeRow | None:
        row = await self.conn.fetchrow(
            """SELECT source_customer, target_customer, actor, reason, merge_time FROM merges
               WHERE request_id = $1""",
            request_id,
        )
        if row is None:
            return None
        return MergeRow(row["source_customer"], row["target_customer"], row["actor"], row["reason"], row["merge_time"])

    async def fold(self, source: uuid.UUID, target: uuid.UUID) -> None:
        """Move everything of `source` to `target` and mark `source` merged into it."""
        # A claim the other side owns (or also claims) is redundant once they are one customer.
        await self.conn.execute(
            """DELETE FROM identifiers t USING identifiers s
               WHERE t.customer_id = $2 AND s.customer_id = $1 AND NOT t.verified
                 AND t.kind = s.kind AND t.value = s.value""",
            source,
            target,
        )
        await self.conn.execute(
            """DELETE FROM identifiers s USING identifiers t
               WHERE s.customer_id = $1 AND t.customer_id = $2 AND NOT s.verified
                 AND t.kind = s.kind AND t.value = s.value""",
            source,
            target,
        )
        await self.conn.execute("UPDATE identifiers SET customer_id = $2 WHERE customer_id = $1", source, target)
        await self.conn.execute(
            """UPDATE customers t SET display_name = s.display_name, update_time = now()
               FROM customers s WHERE t.id = $2 AND s.id = $1 AND t.display_name = ''""",
            source,
            target,
        )
        await self.conn.execute(
            """UPDATE customers SET state = 'merged', merged_into = $2, display_name = '', update_time = now()
               WHERE id = $1""",
            source,
            target,
        )
        # Keep merges one hop deep: whatever was merged into the source now points at the target.
        await self.conn.execute("UPDATE customers SET merged_into = $2 WHERE merged_into = $1", source, target)

    async def record_merge(
        self, source: uuid.UUID, target: uuid.UUID, *, actor: str, reason: str, request_id: str | None
    ) -> MergeRow:
        merge_time: datetime = await self.conn.fetchval(
            """INSERT INTO merges (source_customer, target_customer, actor, reason, request_id)
               VALUES ($1, $2, $3, $4, $5) RETURNING merge_time""",
            source,
            target,
            actor,
            reason,
            request_id,
        )
        return MergeRow(source, target, actor, reason, merge_time)

    async def erase(self, customer_id: uuid.UUID) -> datetime:
        """Delete the customer's identifiers and name, keep a tombstone; the erase time."""
        await self.conn.execute("DELETE FROM identifiers WHERE customer_id = $1", customer_id)
        # Customers merged into this one are the same person: their leftovers go too.
        await self.conn.execute(
            "UPDATE customers SET display_name = '', update_time = now() WHERE merged_into = $1", customer_id
        )
        erase_time: datetime = await self.conn.fetchval(
            """UPDATE customers SET state = 'erased', display_name = '', update_time = now()
               WHERE id = $1 RETURNING update_time""",
            customer_id,
        )
        return erase_time

    async def record_erasure(self, customer_id: uuid.UUID, *, actor: str, reason: str, erase_time: datetime) -> None:
        await self.conn.execute(
            "INSERT INTO erasures (customer_id, actor, reason, erase_time) VALUES ($1, $2, $3, $4)",
            customer_id,
            actor,
            reason,
            erase_time,
        )

    async def enqueue(self, topic: str, key: str, message: Message) -> None:
        """Add an event to the outbox, committed with the caller's transaction."""
        await outbox.enqueue(self.conn, topic, key, message)


class Store:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A connection, no transaction (each statement commits alone)."""
        async with self.pool.acquire() as conn:
            yield Session(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield Session(conn)
