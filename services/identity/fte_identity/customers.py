"""Identity's operations, one transaction each: the store's statements (store.py) in the order the
rules (domain.py) decide. No SQL here and no rule: a branch is a rule's answer or a lost race."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from fte_runtime import topics
from fte_runtime.errors import Aborted, FailedPrecondition
from fte_runtime.identifiers import Normalized

from fte_identity import codes, domain, outbox
from fte_identity.domain import ACTIVE, Evidence, LinkAction, Sighting, VerificationPolicy
from fte_identity.names import customer_name
from fte_identity.rows import CustomerRow, MergeRow
from fte_identity.store import RETRYABLE, Session, Store, UniqueViolation

_RESOLVE_ATTEMPTS = 8


class _Retry(Exception):
    """A concurrent writer won a race; roll back and read again."""


class Customers:
    def __init__(self, store: Store, verification: VerificationPolicy) -> None:
        self._store = store
        self._verification = verification

    # -- resolve -------------------------------------------------------------------------------

    async def resolve(self, ordered: Sequence[Sighting], display_name: str) -> tuple[CustomerRow, bool]:
        """The customer owning the proven sightings (domain.plan_resolve), creating one if none does."""
        for _ in range(_RESOLVE_ATTEMPTS):
            try:
                async with self._store.session() as s:
                    return await _resolve_once(s, ordered, display_name)
            except (_Retry, *RETRYABLE):
                continue
        raise Aborted("too many concurrent changes to these identifiers; retry", reason="RESOLVE_CONTENDED")

    # -- read ----------------------------------------------------------------------------------

    async def get(self, customer_id: uuid.UUID) -> CustomerRow:
        async with self._store.session() as s:
            return await _read_through(s, customer_id)

    async def list(
        self, size: int, after: tuple[datetime, uuid.UUID] | None, ident: Normalized | None
    ) -> tuple[list[CustomerRow], bool]:
        async with self._store.session() as s:
            return await s.page(size, after, ident)

    # -- link and verify -----------------------------------------------------------------------

    async def link(self, customer_id: uuid.UUID, ident: Normalized, verified: bool) -> CustomerRow:
        try:
            async with self._store.transaction() as s:
                cid = await _lock_active(s, customer_id, share=True)
                owner = await s.verified_owner(ident) if verified else None
                action = domain.plan_link(cid, owner, verified=verified)
                if action is LinkAction.VERIFY:
                    await _verify_by(s, cid, ident, Evidence.STAFF)
                elif action is LinkAction.CLAIM:
                    await s.claim(cid, ident, Evidence.CLAIMED)
                return await _read_through(s, cid)
        except UniqueViolation as exc:
            raise domain.owned_by_other("the identifier was verified for another customer meanwhile") from exc

    async def start_verification(self, customer_id: uuid.UUID, ident: Normalized) -> tuple[str, datetime]:
        policy = self._verification
        code = codes.new_code()
        salt = codes.new_salt()
        async with self._store.transaction() as s:
            cid = await _lock_active(s, customer_id, share=True)
            linked = domain.require_linked(await s.linked(cid, ident))
            # Counted per claimed (kind, value), whoever claims it: a second claimant cannot add
            # guesses against the same identifier.
            domain.check_start(linked.verified, await s.codes_last_hour(ident), policy.max_codes_per_hour)
            await s.supersede_codes(linked.id)
            expire_time = await s.add_code(
                linked.id, codes.code_hash(code, salt, policy.key), salt, policy.ttl, policy.max_attempts
            )
        return code, expire_time

    async def complete_verification(
        self, customer_id: uuid.UUID, ident: Normalized, code: str, *, actor: str
    ) -> tuple[CustomerRow, MergeRow | None]:
        """Verify the claim with the code; when another customer owns the identifier, merge the
        claimant into it in the same transaction. A wrong code's attempt is committed before the
        error is raised."""
        failure: Exception | None = None
        merge: MergeRow | None = None
        customer: CustomerRow | None = None
        try:
            async with self._store.transaction() as s:
                cid = await _lock_active(s, customer_id)
                linked = domain.require_linked(await s.linked(cid, ident))
                stored = await s.newest_code(linked.id)
                pending = stored.pending if stored is not None else None
                checked = domain.check_code(pending, code, self._verification.key, verified=linked.verified)
                assert stored is not None  # check_code refuses a missing code
                if checked is domain.CodeCheck.WRONG:
                    await s.count_attempt(stored.id)
                    failure = domain.wrong_code(stored.pending)
                else:
                    await s.use_code(stored.id)
                    owner = domain.merge_on_proof(cid, await s.verified_owner(ident))
                    if owner is None:
                        await s.verify_linked(linked.id, Evidence.CODE)
                        customer = await s.customer(cid)
                    else:
                        # The used code follows the identifier to its owner, so a replay reads "used".
                        await s.move_codes(linked.id, owner, ident)
                        customer, merge = await _merge_in(
                            s, cid, owner, actor=actor, reason=domain.code_merge_reason(ident.kind), request_id=None
                        )
        except UniqueViolation as exc:
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
        async with self._store.transaction() as s:
            if request_id:
                # A retry waits for the first merge with its request id, then replays it.
                await s.lock_request_id(request_id)
                recorded = await s.merge_by_request(request_id)
                if recorded is not None:
                    domain.check_replay(recorded, source, target)
                    return await _read_through(s, target), recorded
            return await _merge_in(s, source, target, actor=actor, reason=reason, request_id=request_id)

    async def erase(self, customer_id: uuid.UUID, *, actor: str, reason: str) -> bool:
        """Erase personal data, keep a tombstone; False when it was already erased."""
        async with self._store.transaction() as s:
            if not domain.check_erasable(await s.lock(customer_id)):
                return False
            erase_time = await s.erase(customer_id)
            await s.record_erasure(customer_id, actor=actor, reason=reason, erase_time=erase_time)
            await s.enqueue(
                topics.CUSTOMERS_CHANGED, customer_name(customer_id), outbox.customer_erased(customer_id, erase_time)
            )
        return True


async def _resolve_once(s: Session, ordered: Sequence[Sighting], display_name: str) -> tuple[CustomerRow, bool]:
    owners, owning = await s.owning_customers([o.ident for o in ordered])
    plan = domain.plan_resolve(ordered, owners)
    if plan.customer is None:
        return await _create(s, plan, display_name), True
    customer = owning[plan.customer]
    plan = domain.plan_resolve(ordered, owners, {i.key: i.verified for i in customer.identifiers})
    if not domain.resolve_writes(plan, display_name, customer.display_name):
        if customer.state != ACTIVE:
            raise _Retry
        return customer, False
    assert plan.customer is not None
    async with s.transaction():
        state = await s.lock(plan.customer, share=True)
        if state is None or state.state != ACTIVE:
            raise _Retry  # merged or erased since the read: read again
        for ident in plan.verify:
            if not await _verify_by(s, plan.customer, ident, Evidence.CHANNEL):
                raise _Retry  # proven by another customer meanwhile
        for ident in plan.claim:
            await s.claim(plan.customer, ident, Evidence.CLAIMED)
        if display_name:
            await s.rename(plan.customer, display_name)
        loaded = await s.customer(plan.customer)
    assert loaded is not None
    return loaded, False


async def _create(s: Session, plan: domain.ResolvePlan, display_name: str) -> CustomerRow:
    customer_id = uuid.uuid4()
    async with s.transaction():
        await s.create_customer(customer_id, display_name)
        for ident in plan.verify:
            if not await _verify_by(s, customer_id, ident, Evidence.CHANNEL):
                raise _Retry  # created concurrently: roll back this customer, resolve to that one
        for ident in plan.claim:
            await s.claim(customer_id, ident, Evidence.CLAIMED)
        loaded = await s.customer(customer_id)
    assert loaded is not None
    return loaded


async def _read_through(s: Session, customer_id: uuid.UUID) -> CustomerRow:
    customer = domain.found(await s.customer(customer_id))
    target = domain.read_through(customer)
    if target is None:
        return customer
    return domain.found(await s.customer(target))


async def _lock_active(s: Session, customer_id: uuid.UUID, *, share: bool = False) -> uuid.UUID:
    """Lock the active customer a change goes to (following a merge)."""
    state = await s.lock(customer_id, share=share)
    target = domain.lock_through(state)
    if target is not None:
        return await _lock_active(s, target, share=share)
    assert state is not None
    return state.id


async def _verify_by(s: Session, customer_id: uuid.UUID, ident: Normalized, evidence: Evidence) -> bool:
    """Make the identifier the customer's verified one (a claim it holds is upgraded); False when
    another customer holds it verified."""
    if await s.insert_verified(customer_id, ident, evidence):
        return True
    owner = await s.verified_owner(ident)
    if owner is not None:
        return owner == customer_id
    await s.upgrade_claim(customer_id, ident, evidence)
    return True


async def _merge_in(
    s: Session, source: uuid.UUID, target: uuid.UUID, *, actor: str, reason: str, request_id: str | None
) -> tuple[CustomerRow, MergeRow]:
    """Merge `source` into `target` inside the caller's transaction, with the audit record and the
    CustomersMerged event."""
    states = await s.lock_all([source, target])
    for which, cid in (("source_customer", source), ("target_customer", target)):
        domain.check_mergeable(which, states.get(cid))
    await s.fold(source, target)
    merge = await s.record_merge(source, target, actor=actor, reason=reason, request_id=request_id)
    # Keyed by the target, so a later erasure of it is ordered after the merge.
    await s.enqueue(topics.CUSTOMERS_CHANGED, customer_name(target), outbox.customers_merged(merge))
    customer = await s.customer(target)
    assert customer is not None
    return customer, merge
