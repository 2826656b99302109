"""Customers and identifiers in the `identity` schema: every SQL statement of the service.

Ownership of an identifier is the unique index on verified (kind, value): concurrent
resolve-or-create of one new identifier lets exactly one transaction insert it, and the others
roll back their new customer and read the winner. Unverified rows are claims: they own nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from fte.events.v1 import customer_events_pb2
from fte_runtime import topics
from fte_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from fte_runtime.names import make_name
from google.protobuf.timestamp_pb2 import Timestamp

from fte_identity import codes
from fte_identity.normalize import Normalized
from fte_identity.outbox import enqueue

ACTIVE, MERGED, ERASED = "active", "merged", "erased"
_RESOLVE_ATTEMPTS = 8
# Lost races that a fresh read settles: another resolve took the identifier, a deadlock.
_RETRYABLE = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class _Retry(Exception):
    """A concurrent writer won a race; roll back and read again."""


@dataclass(frozen=True, slots=True)
class IdentifierRow:
    kind: int
    value: str
    raw_value: str
    verified: bool
    create_time: datetime


@dataclass(slots=True)
class CustomerRow:
    id: uuid.UUID
    display_name: str
    state: str
    merged_into: uuid.UUID | None
    create_time: datetime
    update_time: datetime
    identifiers: list[IdentifierRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MergeRow:
    source: uuid.UUID
    target: uuid.UUID
    actor: str
    reason: str
    merge_time: datetime


@dataclass(frozen=True, slots=True)
class Sighting:
    """An identifier seen in a resolve; `proven` when it arrived on its own channel."""

    ident: Normalized
    proven: bool


def customer_name(customer_id: uuid.UUID) -> str:
    return make_name("customers", customer_id)


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


_SELECT_CUSTOMER = "SELECT id, display_name, state, merged_into, create_time, update_time FROM customers WHERE id = $1"
# Owners of the given identifiers with each owner's full identifier list, newest state.
_OWNERS = """
    SELECT c.id, c.display_name, c.state, c.merged_into, c.create_time, c.update_time,
           array_agg(a ORDER BY a.create_time, a.id) AS identifiers
    FROM customers c JOIN identifiers a ON a.customer_id = c.id
    WHERE c.id IN (
        SELECT i.customer_id FROM identifiers i
        JOIN unnest($1::smallint[], $2::text[]) AS q(kind, value) ON i.kind = q.kind AND i.value = q.value
        WHERE i.verified)
    GROUP BY c.id"""
_LOCK_SHARE = "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR SHARE"
_LOCK_UPDATE = "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR UPDATE"


async def _load(conn: Any, customer_id: uuid.UUID) -> CustomerRow | None:
    row = await conn.fetchrow(_SELECT_CUSTOMER, customer_id)
    if row is None:
        return None
    customer = CustomerRow(**dict(row))
    await _attach_identifiers(conn, [customer])
    return customer


async def _attach_identifiers(conn: Any, customers: Sequence[CustomerRow]) -> None:
    if not customers:
        return
    by_id = {c.id: c for c in customers}
    rows = await conn.fetch(
        """SELECT customer_id, kind, value, raw_value, verified, create_time FROM identifiers
           WHERE customer_id = ANY($1::uuid[]) ORDER BY create_time, id""",
        list(by_id),
    )
    for r in rows:
        by_id[r["customer_id"]].identifiers.append(
            IdentifierRow(r["kind"], r["value"], r["raw_value"], r["verified"], r["create_time"])
        )


async def _load_following(conn: Any, customer_id: uuid.UUID) -> CustomerRow:
    """The customer, or the one it was merged into (merges are flattened: one hop at most)."""
    customer = await _load(conn, customer_id)
    if customer is None:
        raise NotFound("customer not found", reason="CUSTOMER_NOT_FOUND")
    if customer.state == MERGED and customer.merged_into is not None:
        target = await _load(conn, customer.merged_into)
        if target is None:  # pragma: no cover - a foreign key guarantees it
            raise NotFound("customer not found", reason="CUSTOMER_NOT_FOUND")
        return target
    return customer


async def _lock_active(conn: Any, customer_id: uuid.UUID, *, share: bool = False) -> uuid.UUID:
    """Lock the customer (following a merge) for a change; NOT_FOUND / FAILED_PRECONDITION otherwise."""
    row = await conn.fetchrow(_LOCK_SHARE if share else _LOCK_UPDATE, customer_id)
    if row is None:
        raise NotFound("customer not found", reason="CUSTOMER_NOT_FOUND")
    if row["state"] == MERGED:
        return await _lock_active(conn, row["merged_into"], share=share)
    if row["state"] == ERASED:
        raise FailedPrecondition("the customer was erased", reason="CUSTOMER_ERASED")
    found: uuid.UUID = row["id"]
    return found


class Store:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    # -- resolve -------------------------------------------------------------------------------

    async def resolve(self, sightings: Sequence[Sighting], display_name: str) -> tuple[CustomerRow, bool]:
        """The customer owning the sightings, creating one if no proven identifier has an owner.

        Rule: the owner of the first proven identifier (kind order EMAIL, WHATSAPP, BSUID) is the
        customer. Identifiers nobody owns are linked to it as verified (given together). One owned
        by a different customer is never moved and the two are never merged: it is recorded as an
        unverified claim of the chosen customer, for a person to verify or merge.
        """
        ordered = sorted(sightings, key=lambda s: (not s.proven, s.ident.kind))
        for _ in range(_RESOLVE_ATTEMPTS):
            try:
                async with self.pool.acquire() as conn:
                    return await self._resolve_once(conn, ordered, display_name)
            except (_Retry, *_RETRYABLE):
                continue
        raise Aborted("too many concurrent changes to these identifiers; retry", reason="RESOLVE_CONTENDED")

    async def _owners(
        self, conn: Any, idents: Sequence[Normalized]
    ) -> tuple[dict[tuple[int, str], uuid.UUID], dict[uuid.UUID, CustomerRow]]:
        """Who owns each identifier, and those customers with all their identifiers: one round trip."""
        rows = await conn.fetch(_OWNERS, [i.kind for i in idents], [i.value for i in idents])
        owners: dict[tuple[int, str], uuid.UUID] = {}
        customers: dict[uuid.UUID, CustomerRow] = {}
        for r in rows:
            customer = CustomerRow(
                r["id"], r["display_name"], r["state"], r["merged_into"], r["create_time"], r["update_time"]
            )
            for i in r["identifiers"]:
                row = IdentifierRow(i["kind"], i["value"], i["raw_value"], i["verified"], i["create_time"])
                customer.identifiers.append(row)
                if row.verified:
                    owners[(row.kind, row.value)] = customer.id
            customers[customer.id] = customer
        return owners, customers

    async def _resolve_once(
        self, conn: Any, ordered: Sequence[Sighting], display_name: str
    ) -> tuple[CustomerRow, bool]:
        idents = [s.ident for s in ordered]
        owners, known = await self._owners(conn, idents)
        chosen = next(
            (
                owners[(s.ident.kind, s.ident.value)]
                for s in ordered
                if s.proven and (s.ident.kind, s.ident.value) in owners
            ),
            None,
        )
        if chosen is None:
            return await self._create(conn, ordered, owners, display_name), True
        customer = known[chosen]
        if all(owners.get((i.kind, i.value)) == chosen for i in idents):
            if customer.state != ACTIVE:
                raise _Retry
            if not display_name or display_name == customer.display_name:
                return customer, False
        async with conn.transaction():
            row = await conn.fetchrow("SELECT state FROM customers WHERE id = $1 FOR SHARE", chosen)
            if row is None or row["state"] != ACTIVE:
                raise _Retry  # merged or erased since the read: read again
            for ident in idents:
                if owners.get((ident.kind, ident.value)) != chosen:
                    await self._attach(conn, chosen, ident)
            if display_name:
                await conn.execute(
                    """UPDATE customers SET display_name = $2, update_time = now()
                       WHERE id = $1 AND display_name IS DISTINCT FROM $2""",
                    chosen,
                    display_name,
                )
            loaded = await _load(conn, chosen)
        assert loaded is not None
        return loaded, False

    async def _create(
        self,
        conn: Any,
        ordered: Sequence[Sighting],
        owners: dict[tuple[int, str], uuid.UUID],
        display_name: str,
    ) -> CustomerRow:
        customer_id = uuid.uuid4()
        async with conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO customers (id, display_name) VALUES ($1, $2)
                   RETURNING id, display_name, state, merged_into, create_time, update_time""",
                customer_id,
                display_name,
            )
            customer = CustomerRow(**dict(row))
            for s in ordered:
                added = None
                if (s.ident.kind, s.ident.value) not in owners:
                    added = await _insert_verified(conn, customer_id, s.ident)
                    if added is None and s.proven:
                        raise _Retry  # created concurrently: roll back this customer, resolve to that one
                if added is None:
                    added = await _claim(conn, customer_id, s.ident)
                if added is not None:
                    customer.identifiers.append(added)
        return customer

    async def _attach(self, conn: Any, customer_id: uuid.UUID, ident: Normalized) -> None:
        """Link an identifier given together with the customer's own: verified when nobody owns it,
        else a claim."""
        if await _insert_verified(conn, customer_id, ident) is not None:
            return
        owner = await _verified_owner(conn, ident)
        if owner is None:
            # The customer already claimed it; being given together with a proven identifier verifies it.
            await conn.execute(
                """UPDATE identifiers SET verified = true, verify_time = now()
                   WHERE customer_id = $1 AND kind = $2 AND value = $3""",
                customer_id,
                ident.kind,
                ident.value,
            )
        elif owner != customer_id:
            await _claim(conn, customer_id, ident)

    # -- read ----------------------------------------------------------------------------------

    async def get(self, customer_id: uuid.UUID) -> CustomerRow:
        async with self.pool.acquire() as conn:
            return await _load_following(conn, customer_id)

    async def list(
        self, size: int, after: tuple[datetime, uuid.UUID] | None, ident: Normalized | None
    ) -> tuple[list[CustomerRow], bool]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT id, display_name, state, merged_into, create_time, update_time FROM customers c
                    WHERE c.state <> 'merged'
                      AND ($1::smallint IS NULL OR EXISTS (
                            SELECT 1 FROM identifiers i WHERE i.customer_id = c.id AND i.kind = $1
                              AND i.value = $2 AND i.verified))
                      AND ($3::timestamptz IS NULL OR (c.create_time, c.id) < ($3, $4::uuid))
                    ORDER BY c.create_time DESC, c.id DESC LIMIT $5""",
                ident.kind if ident else None,
                ident.value if ident else None,
                after[0] if after else None,
                after[1] if after else None,
                size + 1,
            )
            customers = [CustomerRow(**dict(r)) for r in rows[:size]]
            await _attach_identifiers(conn, customers)
        return customers, len(rows) > size

    # -- link and verify -----------------------------------------------------------------------

    async def link(self, customer_id: uuid.UUID, ident: Normalized, verified: bool) -> CustomerRow:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                cid = await _lock_active(conn, customer_id, share=True)
                if verified:
                    owner = await _verified_owner(conn, ident)
                    if owner is not None and owner != cid:
                        raise AlreadyExists(
                            "the identifier is verified for another customer; merge them instead",
                            reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
                        )
                    if owner is None and await _insert_verified(conn, cid, ident) is None:
                        await conn.execute(
                            """UPDATE identifiers SET verified = true, verify_time = now()
                               WHERE customer_id = $1 AND kind = $2 AND value = $3""",
                            cid,
                            ident.kind,
                            ident.value,
                        )
                else:
                    await _claim(conn, cid, ident)
                return await _load_following(conn, cid)
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(
                "the identifier was verified for another customer meanwhile",
                reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
            ) from exc

    async def _claimed_row(self, conn: Any, customer_id: uuid.UUID, ident: Normalized) -> Any:
        row = await conn.fetchrow(
            """SELECT id, verified FROM identifiers WHERE customer_id = $1 AND kind = $2 AND value = $3
               FOR UPDATE""",
            customer_id,
            ident.kind,
            ident.value,
        )
        if row is None:
            raise NotFound(
                "the identifier is not linked to this customer; link it first", reason="IDENTIFIER_NOT_LINKED"
            )
        return row

    async def start_verification(
        self,
        customer_id: uuid.UUID,
        ident: Normalized,
        *,
        ttl: timedelta,
        max_attempts: int,
        max_codes_per_hour: int,
        key: bytes,
    ) -> tuple[str, datetime]:
        code = codes.new_code()
        salt = codes.new_salt()
        async with self.pool.acquire() as conn, conn.transaction():
            cid = await _lock_active(conn, customer_id, share=True)
            row = await self._claimed_row(conn, cid, ident)
            if row["verified"]:
                raise FailedPrecondition("the identifier is already verified", reason="ALREADY_VERIFIED")
            # Each code allows a few guesses; capping new codes caps the guesses per hour.
            recent = await conn.fetchval(
                """SELECT count(*) FROM verification_codes
                   WHERE identifier_id = $1 AND create_time > now() - interval '1 hour'""",
                row["id"],
            )
            if recent >= max_codes_per_hour:
                raise ResourceExhausted(
                    "too many codes were sent for this identifier in the last hour; try later",
                    reason="TOO_MANY_CODES",
                )
            await conn.execute(
                "UPDATE verification_codes SET superseded = true WHERE identifier_id = $1 AND used_time IS NULL",
                row["id"],
            )
            expire_time: datetime = await conn.fetchval(
                """INSERT INTO verification_codes (identifier_id, code_hash, salt, expire_time, max_attempts)
                   VALUES ($1, $2, $3, now() + $4::interval, $5) RETURNING expire_time""",
                row["id"],
                codes.code_hash(code, salt, key),
                salt,
                ttl,
                max_attempts,
            )
        return code, expire_time

    async def complete_verification(
        self, customer_id: uuid.UUID, ident: Normalized, code: str, *, key: bytes
    ) -> CustomerRow:
        failure: Exception | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                cid = await _lock_active(conn, customer_id, share=True)
                ident_row = await self._claimed_row(conn, cid, ident)
                pending = await conn.fetchrow(
                    """SELECT id, code_hash, salt, attempts, max_attempts, used_time, superseded,
                              expire_time <= now() AS expired
                       FROM verification_codes WHERE identifier_id = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE""",
                    ident_row["id"],
                )
                if pending is None:
                    raise FailedPrecondition(
                        "no verification was started for this identifier", reason="VERIFICATION_NOT_STARTED"
                    )
                if pending["used_time"] is not None:
                    raise FailedPrecondition("the code was already used", reason="CODE_ALREADY_USED")
                if pending["expired"]:
                    raise FailedPrecondition("the code expired; start a new verification", reason="CODE_EXPIRED")
                if pending["attempts"] >= pending["max_attempts"]:
                    raise ResourceExhausted(
                        "too many wrong codes; start a new verification", reason="TOO_MANY_ATTEMPTS"
                    )
                if not codes.matches(code, pending["salt"], key, pending["code_hash"]):
                    # The attempt is counted and committed; the error is raised after the commit.
                    await conn.execute(
                        "UPDATE verification_codes SET attempts = attempts + 1 WHERE id = $1", pending["id"]
                    )
                    left = pending["max_attempts"] - pending["attempts"] - 1
                    failure = InvalidArgument(
                        "the code is wrong", reason="WRONG_CODE", metadata={"attempts_left": str(left)}
                    )
                else:
                    owner = await _verified_owner(conn, ident)
                    if owner is not None and owner != cid:
                        raise FailedPrecondition(
                            "the identifier is verified for another customer; merge the two customers",
                            reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
                        )
                    await conn.execute("UPDATE verification_codes SET used_time = now() WHERE id = $1", pending["id"])
                    await conn.execute(
                        "UPDATE identifiers SET verified = true, verify_time = now() WHERE id = $1", ident_row["id"]
                    )
                    customer = await _load(conn, cid)
        except asyncpg.UniqueViolationError as exc:
            raise FailedPrecondition(
                "the identifier was verified for another customer meanwhile",
                reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
            ) from exc
        if failure is not None:
            raise failure
        assert customer is not None
        return customer

    # -- merge and erase -----------------------------------------------------------------------

    async def merge(
        self, source: uuid.UUID, target: uuid.UUID, *, actor: str, reason: str, request_id: str | None
    ) -> tuple[CustomerRow, MergeRow]:
        async with self.pool.acquire() as conn, conn.transaction():
            if request_id:
                done = await self._merge_by_request(conn, request_id, source, target)
                if done is not None:
                    return done
            rows = await conn.fetch(
                "SELECT id, state, merged_into FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                [source, target],
            )
            states = {r["id"]: r for r in rows}
            for which, cid in (("source_customer", source), ("target_customer", target)):
                if cid not in states:
                    raise NotFound(f"{which} not found", reason="CUSTOMER_NOT_FOUND", metadata={"field": which})
                if states[cid]["state"] == ERASED:
                    raise FailedPrecondition(f"{which} was erased", reason="CUSTOMER_ERASED")
                if states[cid]["state"] == MERGED:
                    raise FailedPrecondition(
                        f"{which} was already merged into {customer_name(states[cid]['merged_into'])}",
                        reason="CUSTOMER_ALREADY_MERGED",
                    )
            # A claim the other side owns (or also claims) is redundant once they are one customer.
            await conn.execute(
                """DELETE FROM identifiers t USING identifiers s
                   WHERE t.customer_id = $2 AND s.customer_id = $1 AND NOT t.verified
                     AND t.kind = s.kind AND t.value = s.value""",
                source,
                target,
            )
            await conn.execute(
                """DELETE FROM identifiers s USING identifiers t
                   WHERE s.customer_id = $1 AND t.customer_id = $2 AND NOT s.verified
                     AND t.kind = s.kind AND t.value = s.value""",
                source,
                target,
            )
            await conn.execute("UPDATE identifiers SET customer_id = $2 WHERE customer_id = $1", source, target)
            await conn.execute(
                """UPDATE customers t SET display_name = s.display_name, update_time = now()
                   FROM customers s WHERE t.id = $2 AND s.id = $1 AND t.display_name = ''""",
                source,
                target,
            )
            await conn.execute(
                """UPDATE customers SET state = 'merged', merged_into = $2, display_name = '', update_time = now()
                   WHERE id = $1""",
                source,
                target,
            )
            # Keep merges one hop deep: whatever was merged into the source now points at the target.
            await conn.execute("UPDATE customers SET merged_into = $2 WHERE merged_into = $1", source, target)
            merge_time: datetime = await conn.fetchval(
                """INSERT INTO merges (source_customer, target_customer, actor, reason, request_id)
                   VALUES ($1, $2, $3, $4, $5) RETURNING merge_time""",
                source,
                target,
                actor,
                reason,
                request_id,
            )
            # Keyed by the target, so a later erasure of it is ordered after the merge.
            await enqueue(
                conn,
                topics.CUSTOMERS_CHANGED,
                customer_name(target),
                customer_events_pb2.CustomersMerged(
                    source_customer=customer_name(source),
                    target_customer=customer_name(target),
                    merged_time=timestamp(merge_time),
                ),
            )
            customer = await _load(conn, target)
        assert customer is not None
        return customer, MergeRow(source, target, actor, reason, merge_time)

    async def _merge_by_request(
        self, conn: Any, request_id: str, source: uuid.UUID, target: uuid.UUID
    ) -> tuple[CustomerRow, MergeRow] | None:
        # Serialise merges that share a request id, so a retry waits for the first and replays it.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"identity-merge:{request_id}")
        row = await conn.fetchrow(
            """SELECT source_customer, target_customer, actor, reason, merge_time FROM merges
               WHERE request_id = $1""",
            request_id,
        )
        if row is None:
            return None
        if (row["source_customer"], row["target_customer"]) != (source, target):
            raise FailedPrecondition("request_id was already used for a different merge", reason="REQUEST_ID_REUSED")
        customer = await _load_following(conn, target)
        return customer, MergeRow(source, target, row["actor"], row["reason"], row["merge_time"])

    async def erase(self, customer_id: uuid.UUID, *, actor: str, reason: str) -> bool:
        """Erase personal data, keep a tombstone; False when it was already erased."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT state, merged_into FROM customers WHERE id = $1 FOR UPDATE", customer_id)
            if row is None:
                raise NotFound("customer not found", reason="CUSTOMER_NOT_FOUND")
            if row["state"] == ERASED:
                return False
            if row["state"] == MERGED:
                raise FailedPrecondition(
                    f"the customer was merged; erase {customer_name(row['merged_into'])} instead",
                    reason="CUSTOMER_MERGED",
                )
            await conn.execute("DELETE FROM identifiers WHERE customer_id = $1", customer_id)
            # Customers merged into this one are the same person: their leftovers go too.
            await conn.execute(
                "UPDATE customers SET display_name = '', update_time = now() WHERE merged_into = $1", customer_id
            )
            erase_time: datetime = await conn.fetchval(
                """UPDATE customers SET state = 'erased', display_name = '', update_time = now()
                   WHERE id = $1 RETURNING update_time""",
                customer_id,
            )
            await conn.execute(
                "INSERT INTO erasures (customer_id, actor, reason, erase_time) VALUES ($1, $2, $3, $4)",
                customer_id,
                actor,
                reason,
                erase_time,
            )
            await enqueue(
                conn,
                topics.CUSTOMERS_CHANGED,
                customer_name(customer_id),
                customer_events_pb2.CustomerErased(
                    customer=customer_name(customer_id), erased_time=timestamp(erase_time)
                ),
            )
        return True


async def _verified_owner(conn: Any, ident: Normalized) -> uuid.UUID | None:
    """The customer holding the identifier verified, if any (at most one: a unique index)."""
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT customer_id FROM identifiers WHERE kind = $1 AND value = $2 AND verified", ident.kind, ident.value
    )
    return owner


async def _insert_verified(conn: Any, customer_id: uuid.UUID, ident: Normalized) -> IdentifierRow | None:
    """Insert the identifier as the customer's verified one; None if any unique index objects
    (someone owns it, or this customer already has a row for it)."""
    row = await conn.fetchrow(
        """INSERT INTO identifiers (customer_id, kind, value, raw_value, verified, verify_time)
           VALUES ($1, $2, $3, $4, true, now()) ON CONFLICT DO NOTHING
           RETURNING kind, value, raw_value, verified, create_time""",
        customer_id,
        ident.kind,
        ident.value,
        ident.raw_value,
    )
    return None if row is None else IdentifierRow(**dict(row))


async def _claim(conn: Any, customer_id: uuid.UUID, ident: Normalized) -> IdentifierRow | None:
    """Record a claim; None when the customer already has a row for the identifier."""
    row = await conn.fetchrow(
        """INSERT INTO identifiers (customer_id, kind, value, raw_value, verified)
           VALUES ($1, $2, $3, $4, false) ON CONFLICT (customer_id, kind, value) DO NOTHING
           RETURNING kind, value, raw_value, verified, create_time""",
        customer_id,
        ident.kind,
        ident.value,
        ident.raw_value,
    )
    return None if row is None else IdentifierRow(**dict(row))
