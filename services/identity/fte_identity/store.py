"""Customers and identifiers in the `identity` schema: every SQL statement of the service.

The rules (what a channel proves, which customer a sighting resolves to, when a code is accepted,
when customers may be merged or erased) live in domain.py; this module runs the statements and
returns typed, frozen rows.

Ownership of an identifier is the unique index on verified (kind, value): concurrent
resolve-or-create of one new identifier lets exactly one transaction insert it, and the others
roll back their new customer and read the winner. Unverified rows are claims: they own nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from fte.events.v1 import customer_events_pb2
from fte_runtime import topics
from fte_runtime.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from fte_runtime.names import make_name
from google.protobuf.timestamp_pb2 import Timestamp

from fte_identity import codes, domain
from fte_identity.domain import ACTIVE, ERASED, MERGED, Evidence, Sighting
from fte_identity.normalize import Normalized
from fte_identity.outbox import enqueue

__all__ = ["ACTIVE", "ERASED", "MERGED", "CustomerRow", "IdentifierRow", "MergeRow", "Sighting", "Store"]

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
    evidence: int
    create_time: datetime
    # A claim of an identifier another customer holds verified.
    contested: bool = False
    # When the code waiting to be sent back expires; None when no code waits.
    verification_expire_time: datetime | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.kind, self.value)


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: uuid.UUID
    display_name: str
    state: str
    merged_into: uuid.UUID | None
    create_time: datetime
    update_time: datetime
    identifiers: tuple[IdentifierRow, ...] = ()


@dataclass(frozen=True, slots=True)
class MergeRow:
    source: uuid.UUID
    target: uuid.UUID
    actor: str
    reason: str
    merge_time: datetime


def customer_name(customer_id: uuid.UUID) -> str:
    return make_name("customers", customer_id)


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


_CUSTOMER_COLUMNS = "id, display_name, state, merged_into, create_time, update_time"
_IDENTIFIERS = """
    SELECT i.customer_id, i.kind, i.value, i.raw_value, i.verified, i.evidence, i.create_time,
           (NOT i.verified AND EXISTS (
               SELECT 1 FROM identifiers o WHERE o.kind = i.kind AND o.value = i.value AND o.verified
                 AND o.customer_id <> i.customer_id)) AS contested,
           (SELECT v.expire_time FROM verification_codes v
             WHERE v.identifier_id = i.id AND v.used_time IS NULL AND NOT v.superseded
               AND v.attempts < v.max_attempts AND v.expire_time > now()
             ORDER BY v.id DESC LIMIT 1) AS verification_expire_time
    FROM identifiers i WHERE i.customer_id = ANY($1::uuid[]) ORDER BY i.create_time, i.id"""
# The verified owners of the given identifiers.
_OWNERS = """
    SELECT i.kind, i.value, i.customer_id FROM identifiers i
    JOIN unnest($1::smallint[], $2::text[]) AS q(kind, value) ON i.kind = q.kind AND i.value = q.value
    WHERE i.verified"""
_LOCK_SHARE = "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR SHARE"
_LOCK_UPDATE = "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR UPDATE"


async def _load_many(conn: Any, ids: Sequence[uuid.UUID]) -> list[CustomerRow]:
    """The customers in the order given (missing ones left out), each with its identifiers."""
    if not ids:
        return []
    rows = await conn.fetch(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ANY($1::uuid[])", list(ids))  # noqa: S608
    return await _with_identifiers(conn, rows, order=list(ids))


async def _with_identifiers(
    conn: Any, rows: Sequence[Any], order: Sequence[uuid.UUID] | None = None
) -> list[CustomerRow]:
    by_id: dict[uuid.UUID, list[IdentifierRow]] = {r["id"]: [] for r in rows}
    if by_id:
        for r in await conn.fetch(_IDENTIFIERS, list(by_id)):
            by_id[r["customer_id"]].append(
                IdentifierRow(
                    r["kind"],
                    r["value"],
                    r["raw_value"],
                    r["verified"],
                    r["evidence"],
                    r["create_time"],
                    r["contested"],
                    r["verification_expire_time"],
                )
            )
    customers = {r["id"]: CustomerRow(**dict(r), identifiers=tuple(by_id[r["id"]])) for r in rows}
    keys = order if order is not None else [r["id"] for r in rows]
    return [customers[k] for k in keys if k in customers]


async def _load(conn: Any, customer_id: uuid.UUID) -> CustomerRow | None:
    found = await _load_many(conn, [customer_id])
    return found[0] if found else None


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

    async def resolve(self, ordered: Sequence[Sighting], display_name: str) -> tuple[CustomerRow, bool]:
        """The customer owning the proven sightings (domain.plan_resolve), creating one if none does."""
        for _ in range(_RESOLVE_ATTEMPTS):
            try:
                async with self.pool.acquire() as conn:
                    return await self._resolve_once(conn, ordered, display_name)
            except (_Retry, *_RETRYABLE):
                continue
        raise Aborted("too many concurrent changes to these identifiers; retry", reason="RESOLVE_CONTENDED")

    async def _owners(self, conn: Any, ordered: Sequence[Sighting]) -> dict[tuple[int, str], uuid.UUID]:
        rows = await conn.fetch(_OWNERS, [s.ident.kind for s in ordered], [s.ident.value for s in ordered])
        return {(r["kind"], r["value"]): r["customer_id"] for r in rows}

    async def _resolve_once(
        self, conn: Any, ordered: Sequence[Sighting], display_name: str
    ) -> tuple[CustomerRow, bool]:
        owners = await self._owners(conn, ordered)
        plan = domain.plan_resolve(ordered, owners)
        if plan.customer is None:
            return await self._create(conn, plan, display_name), True
        customer = await _load(conn, plan.customer)
        if customer is None:
            raise _Retry
        plan = domain.plan_resolve(ordered, owners, {i.key: i.verified for i in customer.identifiers})
        if not plan.verify and not plan.claim and (not display_name or display_name == customer.display_name):
            if customer.state != ACTIVE:
                raise _Retry
            return customer, False
        assert plan.customer is not None
        async with conn.transaction():
            row = await conn.fetchrow("SELECT state FROM customers WHERE id = $1 FOR SHARE", plan.customer)
            if row is None or row["state"] != ACTIVE:
                raise _Retry  # merged or erased since the read: read again
            for ident in plan.verify:
                if not await _verify_by(conn, plan.customer, ident, Evidence.CHANNEL):
                    raise _Retry  # proven by another customer meanwhile
            for ident in plan.claim:
                await _claim(conn, plan.customer, ident)
            if display_name:
                await conn.execute(
                    """UPDATE customers SET display_name = $2, update_time = now()
                       WHERE id = $1 AND display_name IS DISTINCT FROM $2""",
                    plan.customer,
                    display_name,
                )
            loaded = await _load(conn, plan.customer)
        assert loaded is not None
        return loaded, False

    async def _create(self, conn: Any, plan: domain.ResolvePlan, display_name: str) -> CustomerRow:
        customer_id = uuid.uuid4()
        async with conn.transaction():
            await conn.execute("INSERT INTO customers (id, display_name) VALUES ($1, $2)", customer_id, display_name)
            for ident in plan.verify:
                if not await _verify_by(conn, customer_id, ident, Evidence.CHANNEL):
                    raise _Retry  # created concurrently: roll back this customer, resolve to that one
            for ident in plan.claim:
                await _claim(conn, customer_id, ident)
            loaded = await _load(conn, customer_id)
        assert loaded is not None
        return loaded

    # -- read ----------------------------------------------------------------------------------

    async def get(self, customer_id: uuid.UUID) -> CustomerRow:
        async with self.pool.acquire() as conn:
            return await _load_following(conn, customer_id)

    async def list(
        self, size: int, after: tuple[datetime, uuid.UUID] | None, ident: Normalized | None
    ) -> tuple[list[CustomerRow], bool]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
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
            customers = await _with_identifiers(conn, rows[:size])
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
                    if owner is None:
                        await _verify_by(conn, cid, ident, Evidence.STAFF)
                else:
                    await _claim(conn, cid, ident)
                return await _load_following(conn, cid)
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(
                "the identifier was verified for another customer meanwhile",
                reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
            ) from exc

    async def _identifier_row(self, conn: Any, customer_id: uuid.UUID, ident: Normalized) -> Any:
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
            row = await self._identifier_row(conn, cid, ident)
            # Codes per claimed (kind, value) in the last hour, whoever claims it: a second claimant
            # cannot add guesses against the same identifier.
            recent = await conn.fetchval(
                """SELECT count(*) FROM verification_codes v JOIN identifiers i ON i.id = v.identifier_id
                   WHERE i.kind = $1 AND i.value = $2 AND v.create_time > now() - interval '1 hour'""",
                ident.kind,
                ident.value,
            )
            domain.check_start(row["verified"], recent, max_codes_per_hour)
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
        self, customer_id: uuid.UUID, ident: Normalized, code: str, *, key: bytes, actor: str
    ) -> tuple[CustomerRow, MergeRow | None]:
        """Verify the claim with the code; when another customer owns the identifier, merge the
        claimant into it in the same transaction. A wrong code's attempt is committed before the
        error is raised."""
        failure: Exception | None = None
        merge: MergeRow | None = None
        customer: CustomerRow | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                cid = await _lock_active(conn, customer_id)
                ident_row = await self._identifier_row(conn, cid, ident)
                stored = await conn.fetchrow(
                    """SELECT id, code_hash, salt, attempts, max_attempts, used_time IS NOT NULL AS used,
                              superseded, expire_time <= now() AS expired
                       FROM verification_codes WHERE identifier_id = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE""",
                    ident_row["id"],
                )
                pending = (
                    None
                    if stored is None
                    else domain.PendingCode(
                        stored["code_hash"],
                        stored["salt"],
                        stored["attempts"],
                        stored["max_attempts"],
                        stored["used"],
                        stored["superseded"],
                        stored["expired"],
                    )
                )
                if domain.check_code(pending, code, key, verified=ident_row["verified"]) is domain.CodeCheck.WRONG:
                    assert stored is not None
                    assert pending is not None
                    await conn.execute(
                        "UPDATE verification_codes SET attempts = attempts + 1 WHERE id = $1", stored["id"]
                    )
                    failure = domain.wrong_code(pending)
                else:
                    assert stored is not None
                    await conn.execute("UPDATE verification_codes SET used_time = now() WHERE id = $1", stored["id"])
                    owner = await _verified_owner(conn, ident)
                    if owner is None or owner == cid:
                        await conn.execute(
                            """UPDATE identifiers SET verified = true, evidence = $2, verify_time = now()
                               WHERE id = $1""",
                            ident_row["id"],
                            int(Evidence.CODE),
                        )
                        customer = await _load(conn, cid)
                    else:
                        # The used code follows the identifier to its owner, so a replay reads "used".
                        await conn.execute(
                            """UPDATE verification_codes SET identifier_id = (
                                   SELECT id FROM identifiers WHERE customer_id = $2 AND kind = $3 AND value = $4)
                               WHERE identifier_id = $1""",
                            ident_row["id"],
                            owner,
                            ident.kind,
                            ident.value,
                        )
                        customer, merge = await _merge_in(
                            conn, cid, owner, actor=actor, reason=domain.code_merge_reason(ident.kind), request_id=None
                        )
        except asyncpg.UniqueViolationError as exc:
            raise FailedPrecondition(
                "the identifier was verified for another customer meanwhile; send the code again",
                reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
            ) from exc
        if failure is not None:
            raise failure
        assert customer is not None
        return customer, merge

    # -- merge and erase -----------------------------------------------------------------------

    async def merge(
        self, source: uuid.UUID, target: uuid.UUID, *, actor: str, reason: str, request_id: str | None
    ) -> tuple[CustomerRow, MergeRow]:
        async with self.pool.acquire() as conn, conn.transaction():
            if request_id:
                done = await self._merge_by_request(conn, request_id, source, target)
                if done is not None:
                    return done
            return await _merge_in(conn, source, target, actor=actor, reason=reason, request_id=request_id)

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
            row = await conn.fetchrow(
                "SELECT id, state, merged_into FROM customers WHERE id = $1 FOR UPDATE", customer_id
            )
            if row is None:
                raise NotFound("customer not found", reason="CUSTOMER_NOT_FOUND")
            if not domain.check_erasable(domain.CustomerState(row["id"], row["state"], row["merged_into"])):
                return False
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


async def _merge_in(
    conn: Any, source: uuid.UUID, target: uuid.UUID, *, actor: str, reason: str, request_id: str | None
) -> tuple[CustomerRow, MergeRow]:
    """Merge `source` into `target` inside the caller's transaction, with the audit record and the
    CustomersMerged event."""
    rows = await conn.fetch(
        "SELECT id, state, merged_into FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        [source, target],
    )
    states = {r["id"]: domain.CustomerState(r["id"], r["state"], r["merged_into"]) for r in rows}
    for which, cid in (("source_customer", source), ("target_customer", target)):
        if cid not in states:
            raise NotFound(f"{which} not found", reason="CUSTOMER_NOT_FOUND", metadata={"field": which})
        domain.check_mergeable(which, states[cid])
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


async def _verified_owner(conn: Any, ident: Normalized) -> uuid.UUID | None:
    """The customer holding the identifier verified, if any (at most one: a unique index)."""
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT customer_id FROM identifiers WHERE kind = $1 AND value = $2 AND verified", ident.kind, ident.value
    )
    return owner


async def _verify_by(conn: Any, customer_id: uuid.UUID, ident: Normalized, evidence: Evidence) -> bool:
    """Make the identifier the customer's verified one (a claim it holds is upgraded); False when
    another customer holds it verified."""
    inserted = await conn.fetchval(
        """INSERT INTO identifiers (customer_id, kind, value, raw_value, verified, evidence, verify_time)
           VALUES ($1, $2, $3, $4, true, $5, now()) ON CONFLICT DO NOTHING RETURNING id""",
        customer_id,
        ident.kind,
        ident.value,
        ident.raw_value,
        int(evidence),
    )
    if inserted is not None:
        return True
    owner = await _verified_owner(conn, ident)
    if owner is not None:
        return owner == customer_id
    await conn.execute(
        """UPDATE identifiers SET verified = true, evidence = $4, verify_time = now()
           WHERE customer_id = $1 AND kind = $2 AND value = $3""",
        customer_id,
        ident.kind,
        ident.value,
        int(evidence),
    )
    return True


async def _claim(conn: Any, customer_id: uuid.UUID, ident: Normalized) -> None:
    """Record a claim; nothing when the customer already has a row for the identifier."""
    await conn.execute(
        """INSERT INTO identifiers (customer_id, kind, value, raw_value, verified, evidence)
           VALUES ($1, $2, $3, $4, false, $5) ON CONFLICT (customer_id, kind, value) DO NOTHING""",
        customer_id,
        ident.kind,
        ident.value,
        ident.raw_value,
        int(Evidence.CLAIMED),
    )
