"""Identity's rules, free of SQL: what each channel proves, which customer a sighting resolves to,
when a one-time code is accepted, and when customers may be merged or erased.

The store (store.py) runs the statements; every decision it takes is asked of this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2
from fte_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, ResourceExhausted

from fte_identity import codes
from fte_identity.normalize import Kind, Normalized

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


class CodeCheck(Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"


@dataclass(frozen=True, slots=True)
class PendingCode:
    """The newest code of a claimed identifier, as stored."""

    code_hash: bytes
    salt: bytes
    attempts: int
    max_attempts: int
    used: bool
    superseded: bool
    expired: bool


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


def check_start(verified: bool, recent_codes: int, max_codes_per_hour: int) -> None:
    """A new code may be sent for a claim: not for one already verified by this customer, and at
    most `max_codes_per_hour` (with the attempts per code this bounds guessing)."""
    if verified:
        raise FailedPrecondition("the identifier is already verified", reason="ALREADY_VERIFIED")
    if recent_codes >= max_codes_per_hour:
        raise ResourceExhausted(
            "too many codes were sent for this identifier in the last hour; try later", reason="TOO_MANY_CODES"
        )


@dataclass(frozen=True, slots=True)
class CustomerState:
    id: uuid.UUID
    state: str
    merged_into: uuid.UUID | None


def check_mergeable(which: str, customer: CustomerState) -> None:
    """Only two active customers are merged; the error names the side that is not."""
    if customer.state == ERASED:
        raise FailedPrecondition(f"{which} was erased", reason="CUSTOMER_ERASED")
    if customer.state == MERGED:
        raise FailedPrecondition(
            f"{which} was already merged into customers/{customer.merged_into}", reason="CUSTOMER_ALREADY_MERGED"
        )


def check_erasable(customer: CustomerState) -> bool:
    """True to erase; False when already erased (erasing is idempotent); a merged-away customer is
    erased through the one it was merged into."""
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
