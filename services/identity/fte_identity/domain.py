"""Identity's rules, free of SQL: what each channel proves, which customer a sighting resolves to,
what a staff link does, when a one-time code is sent and accepted, and when customers may be
merged or erased.

The store (store.py) runs the statements and the operations (customers.py) run them in the order
these rules decide; every decision is taken here, from the store's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, IntEnum

from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2
from fte_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from fte_runtime.identifiers import Kind, Normalized

from fte_identity import codes
from fte_identity.rows import CustomerRow, CustomerState, LinkedIdentifier, MergeRow, PendingCode

__all__ = [
    "ACTIVE",
    "ERASED",
    "MERGED",
    "CodeCheck",
    "CustomerState",
    "Evidence",
    "LinkAction",
    "PendingCode",
    "ResolvePlan",
    "Sighting",
    "VerificationPolicy",
    "check_code",
    "check_erasable",
    "check_mergeable",
    "check_replay",
    "check_start",
    "code_merge_reason",
    "customer_not_found",
    "found",
    "lock_through",
    "merge_on_proof",
    "owned_by_other",
    "plan_link",
    "plan_resolve",
    "read_through",
    "require_linked",
    "resolve_writes",
    "sightings",
    "wrong_code",
]

Channel = common_pb2.Channel
ACTIVE, MERGED, ERASED = "active", "merged", "erased"
_WHATSAPP_PREFIX = "whatsapp:"


class Evidence(IntEnum):
    """How an identifier came to a customer (the numbers of `fte.identity.v1.Evidence`)."""

    CLAIMED = identity_pb2.EVIDENCE_CLAIMED
    CHANNEL = identity_pb2.EVIDENCE_CHANNEL
    CODE = identity_pb2.EVIDENCE_CODE
    STAFF = identity_pb2.EVIDENCE_STAFF


@dataclass(frozen=True, slots=True)
class Sighting:
    """An identifier seen in a resolve; `proven` when the channel itself proves control of it."""

    ident: Normalized
    proven: bool
    # Implied by another sighting (a WhatsApp sender's phone), never given by the caller.
    derived: bool = False

    @property
    def key(self) -> tuple[int, str]:
        return (self.ident.kind, self.ident.value)


# What each channel may give, and the kind it must give (the sender's address on that channel).
_CHANNEL_KINDS: dict[int, tuple[frozenset[int], frozenset[int]]] = {
    Channel.CHANNEL_EMAIL: (frozenset({Kind.IDENTIFIER_KIND_EMAIL}), frozenset({Kind.IDENTIFIER_KIND_EMAIL})),
    Channel.CHANNEL_WHATSAPP: (
        frozenset({Kind.IDENTIFIER_KIND_WHATSAPP, Kind.IDENTIFIER_KIND_WHATSAPP_BSUID}),
        frozenset({Kind.IDENTIFIER_KIND_WHATSAPP, Kind.IDENTIFIER_KIND_WHATSAPP_BSUID}),
    ),
    Channel.CHANNEL_WEB_FORM: (
        frozenset({Kind.IDENTIFIER_KIND_EMAIL, Kind.IDENTIFIER_KIND_PHONE}),
        frozenset({Kind.IDENTIFIER_KIND_EMAIL}),
    ),
}


def _invalid(field: str, reason: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {description}", violations=[FieldViolation(field, description)], reason=reason)


def _proves(channel: int, kind: int, sender_authenticated: bool) -> bool:
    """Whether the channel proves control of an identifier of this kind.

    A Twilio WhatsApp sender is proven by the channel (Twilio signs the webhook). An email From is
    proven only when the mail provider's authentication passed. Anything typed into the web form
    is a claim: anyone can type anyone's address or number.
    """
    if channel == Channel.CHANNEL_WHATSAPP:
        return True
    if channel == Channel.CHANNEL_EMAIL:
        return kind == Kind.IDENTIFIER_KIND_EMAIL and sender_authenticated
    return False


def sightings(channel: int, idents: Sequence[Normalized], *, sender_authenticated: bool) -> list[Sighting]:
    """The sightings of one resolve, most decisive first, or INVALID_ARGUMENT.

    A proven WhatsApp sender also proves its phone number: the same E.164 number seen as a
    WhatsApp sender and as a proven phone belongs to one customer.
    """
    kinds = _CHANNEL_KINDS.get(channel)
    if kinds is None:
        raise _invalid("channel", "UNKNOWN_CHANNEL", "must be EMAIL, WHATSAPP or WEB_FORM")
    allowed, required = kinds
    if not idents:
        raise _invalid("identifiers", "IDENTIFIERS_REQUIRED", "at least one identifier is required")
    seen: list[Sighting] = []
    for n, ident in enumerate(idents):
        field = f"identifiers[{n}]"
        if ident.kind not in allowed:
            raise _invalid(f"{field}.kind", "IDENTIFIER_KIND_NOT_ALLOWED", "this kind does not come from the channel")
        if any(s.ident.kind == ident.kind for s in seen):
            raise _invalid(f"{field}.kind", "DUPLICATE_IDENTIFIER_KIND", "give at most one identifier of each kind")
        seen.append(Sighting(ident, _proves(channel, ident.kind, sender_authenticated)))
    if not any(s.ident.kind in required for s in seen):
        raise _invalid(
            "identifiers",
            "CHANNEL_IDENTIFIER_REQUIRED",
            "include the identifier the channel itself gives (the email on email and web form)",
        )
    for s in list(seen):
        if s.proven and s.ident.kind == Kind.IDENTIFIER_KIND_WHATSAPP:
            phone = s.ident.value.removeprefix(_WHATSAPP_PREFIX)
            if not any(o.ident.kind == Kind.IDENTIFIER_KIND_PHONE for o in seen):
                seen.append(Sighting(Normalized(Kind.IDENTIFIER_KIND_PHONE, phone, phone), True, derived=True))
    # The identifiers the caller gave decide before the implied phone (whose owner, in data from
    # before evidence levels, may be someone who only typed the number).
    return sorted(seen, key=lambda s: (not s.proven, s.derived, s.ident.kind))


@dataclass(frozen=True, slots=True)
class ResolvePlan:
    """What a resolve does: `customer` None means create one. `verify` are linked as proven by the
    channel, `claim` as claims; identifiers the customer already holds are in neither."""

    customer: uuid.UUID | None
    verify: tuple[Normalized, ...]
    claim: tuple[Normalized, ...]


def plan_resolve(
    ordered: Sequence[Sighting],
    owners: Mapping[tuple[int, str], uuid.UUID],
    held: Mapping[tuple[int, str], bool] | None = None,
) -> ResolvePlan:
    """The owner of the first proven identifier is the customer; without one, a new customer.

    A claim never picks a customer, never moves an identifier and never merges: a claim of an
    identifier another customer owns stays a claim until a one-time code proves it. `held` maps
    the identifiers the chosen customer already has to whether they are verified.
    """
    chosen = next((owners[s.key] for s in ordered if s.proven and s.key in owners), None)
    held = held or {}
    verify: list[Normalized] = []
    claim: list[Normalized] = []
    for s in ordered:
        owner = owners.get(s.key)
        if chosen is not None and owner == chosen:
            continue
        if s.proven and owner is None:
            if not held.get(s.key, False):
                verify.append(s.ident)
        elif s.key not in held:
            claim.append(s.ident)
    return ResolvePlan(chosen, tuple(verify), tuple(claim))


def resolve_writes(plan: ResolvePlan, display_name: str, current_name: str) -> bool:
    """Whether the resolve changes the customer: an identifier to add, or a new name (an empty
    name given never overwrites one)."""
    return bool(plan.verify or plan.claim or (display_name and display_name != current_name))


# -- the customer a read or a change applies to --------------------------------------------------


def customer_not_found() -> NotFound:
    return NotFound("customer not found", reason="CUSTOMER_NOT_FOUND")


def found(customer: CustomerRow | None) -> CustomerRow:
    if customer is None:
        raise customer_not_found()
    return customer


def read_through(customer: CustomerRow) -> uuid.UUID | None:
    """The customer a read shows instead: the one a merged-away customer went into (merges are
    flattened, so one hop at most); None to show this one."""
    return customer.merged_into if customer.state == MERGED else None


def lock_through(customer: CustomerState | None) -> uuid.UUID | None:
    """The customer a change goes to instead: the one a merged-away customer went into; None when
    this one is active. NOT_FOUND when missing, FAILED_PRECONDITION when erased."""
    if customer is None:
        raise customer_not_found()
    if customer.state == MERGED:
        return customer.merged_into
    if customer.state == ERASED:
        raise FailedPrecondition("the customer was erased", reason="CUSTOMER_ERASED")
    return None


# -- staff links ----------------------------------------------------------------------------------


class LinkAction(Enum):
    VERIFY = "verify"
    CLAIM = "claim"
    # Already the customer's verified identifier.
    KEEP = "keep"


def plan_link(customer: uuid.UUID, owner: uuid.UUID | None, *, verified: bool) -> LinkAction:
    """A staff link: unverified is a claim; verified makes the identifier the customer's, unless
    another customer owns it (ALREADY_EXISTS: merging them is the way)."""
    if not verified:
        return LinkAction.CLAIM
    if owner is None:
        return LinkAction.VERIFY
    if owner != customer:
        raise owned_by_other("the identifier is verified for another customer; merge them instead")
    return LinkAction.KEEP


def owned_by_other(message: str) -> AlreadyExists:
    return AlreadyExists(message, reason="IDENTIFIER_OWNED_BY_OTHER_CUSTOMER")


# -- one-time codes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    ttl: timedelta
    max_attempts: int
    max_codes_per_hour: int
    key: bytes


def require_linked(linked: LinkedIdentifier | None) -> LinkedIdentifier:
    """A code is sent and checked only for an identifier the customer has a row for."""
    if linked is None:
        raise NotFound("the identifier is not linked to this customer; link it first", reason="IDENTIFIER_NOT_LINKED")
    return linked


class CodeCheck(Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"


def check_code(pending: PendingCode | None, code: str, key: bytes, *, verified: bool) -> CodeCheck:
    """ACCEPTED or WRONG (the caller counts the attempt), or the refusal as an error.

    Order matters: a used code is reported as used (a replay), before expiry and attempts."""
    if pending is None:
        if verified:
            raise FailedPrecondition("the identifier is already verified", reason="ALREADY_VERIFIED")
        raise FailedPrecondition("no verification was started for this identifier", reason="VERIFICATION_NOT_STARTED")
    if pending.used:
        raise FailedPrecondition("the code was already used", reason="CODE_ALREADY_USED")
    if pending.expired:
        raise FailedPrecondition("the code expired; start a new verification", reason="CODE_EXPIRED")
    if pending.attempts >= pending.max_attempts:
        raise ResourceExhausted("too many wrong codes; start a new verification", reason="TOO_MANY_ATTEMPTS")
    if not codes.matches(code, pending.salt, key, pending.code_hash):
        return CodeCheck.WRONG
    return CodeCheck.ACCEPTED


def wrong_code(pending: PendingCode) -> InvalidArgument:
    left = max(0, pending.max_attempts - pending.attempts - 1)
    return InvalidArgument("the code is wrong", reason="WRONG_CODE", metadata={"attempts_left": str(left)})


def merge_on_proof(claimant: uuid.UUID, owner: uuid.UUID | None) -> uuid.UUID | None:
    """A completed code proves the claimant controls the identifier. When another customer holds
    it verified, both are the same person: the customer to merge the claimant into; else None."""
    return owner if owner is not None and owner != claimant else None


def check_start(verified: bool, recent_codes: int, max_codes_per_hour: int) -> None:
    """A new code may be sent for a claim: not for one already verified by this customer, and at
    most `max_codes_per_hour` (with the attempts per code this bounds guessing)."""
    if verified:
        raise FailedPrecondition("the identifier is already verified", reason="ALREADY_VERIFIED")
    if recent_codes >= max_codes_per_hour:
        raise ResourceExhausted(
            "too many codes were sent for this identifier in the last hour; try later", reason="TOO_MANY_CODES"
        )


# -- merge and erase ------------------------------------------------------------------------------


def check_mergeable(which: str, customer: CustomerState | None) -> None:
    """Only two active customers are merged; the error names the side that is not."""
    if customer is None:
        raise NotFound(f"{which} not found", reason="CUSTOMER_NOT_FOUND", metadata={"field": which})
    if customer.state == ERASED:
        raise FailedPrecondition(f"{which} was erased", reason="CUSTOMER_ERASED")
    if customer.state == MERGED:
        raise FailedPrecondition(
            f"{which} was already merged into customers/{customer.merged_into}", reason="CUSTOMER_ALREADY_MERGED"
        )


def check_replay(recorded: MergeRow, source: uuid.UUID, target: uuid.UUID) -> None:
    """A merge retried with its request id replays the recorded one; the id names one merge only."""
    if (recorded.source, recorded.target) != (source, target):
        raise FailedPrecondition("request_id was already used for a different merge", reason="REQUEST_ID_REUSED")


def check_erasable(customer: CustomerState | None) -> bool:
    """True to erase; False when already erased (erasing is idempotent); a merged-away customer is
    erased through the one it was merged into."""
    if customer is None:
        raise customer_not_found()
    if customer.state == ERASED:
        return False
    if customer.state == MERGED:
        raise FailedPrecondition(
            f"the customer was merged; erase customers/{customer.merged_into} instead", reason="CUSTOMER_MERGED"
        )
    return True


def code_merge_reason(kind: int) -> str:
    """The audit reason of a merge made by a completed one-time code."""
    return f"one-time code proved the {identity_pb2.IdentifierKind.Name(kind)} claimed by the source customer"  # type: ignore[arg-type]
