"""The identity rules without a database (domain.py): what each channel proves, which customer a
sighting resolves to, and in which order a code is refused."""

from __future__ import annotations

import uuid

import pytest
from fte.common.v1 import common_pb2
from fte_identity import codes, domain
from fte_identity.normalize import Kind, normalize
from fte_runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

C = common_pb2.Channel
EMAIL = normalize(Kind.IDENTIFIER_KIND_EMAIL, "Ana@Example.org", "US")
PHONE = normalize(Kind.IDENTIFIER_KIND_PHONE, "+1 415 555 0100", "US")
WA = normalize(Kind.IDENTIFIER_KIND_WHATSAPP, "whatsapp:+14155550100", "US")


def test_only_the_channel_proves_and_a_whatsapp_sender_proves_its_phone() -> None:
    form = domain.sightings(C.CHANNEL_WEB_FORM, [EMAIL, PHONE], sender_authenticated=True)
    assert [s.proven for s in form] == [False, False]
    assert [s.proven for s in domain.sightings(C.CHANNEL_EMAIL, [EMAIL], sender_authenticated=False)] == [False]
    assert [s.proven for s in domain.sightings(C.CHANNEL_EMAIL, [EMAIL], sender_authenticated=True)] == [True]
    wa = domain.sightings(C.CHANNEL_WHATSAPP, [WA], sender_authenticated=False)
    assert [(s.ident.kind, s.ident.value, s.proven, s.derived) for s in wa] == [
        (Kind.IDENTIFIER_KIND_WHATSAPP, "whatsapp:+14155550100", True, False),
        (Kind.IDENTIFIER_KIND_PHONE, "+14155550100", True, True),
    ]
    with pytest.raises(InvalidArgument):
        domain.sightings(C.CHANNEL_EMAIL, [PHONE], sender_authenticated=True)


def test_a_claim_never_picks_a_customer_and_never_moves() -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    form = domain.sightings(C.CHANNEL_WEB_FORM, [EMAIL, PHONE], sender_authenticated=False)
    plan = domain.plan_resolve(form, {(EMAIL.kind, EMAIL.value): owner})
    assert plan.customer is None
    assert plan.verify == ()
    assert plan.claim == (EMAIL, PHONE)
    wa = domain.sightings(C.CHANNEL_WHATSAPP, [WA], sender_authenticated=False)
    plan = domain.plan_resolve(wa, {(PHONE.kind, PHONE.value): other})
    assert plan.customer == other  # the number proven by a code picks its prover
    assert [i.kind for i in plan.verify] == [Kind.IDENTIFIER_KIND_WHATSAPP]
    # The sender's own WhatsApp owner decides over an implied phone held by someone else.
    plan = domain.plan_resolve(wa, {(WA.kind, WA.value): owner, (PHONE.kind, PHONE.value): other})
    assert plan.customer == owner
    assert [(i.kind, i.value) for i in plan.claim] == [(PHONE.kind, PHONE.value)]


def _pending(code: str, *, attempts: int = 0, used: bool = False, expired: bool = False) -> domain.PendingCode:
    salt = codes.new_salt()
    return domain.PendingCode(codes.code_hash(code, salt, b"k"), salt, attempts, 5, used, False, expired)


def test_code_refusals_come_in_order_used_expired_exhausted_then_wrong() -> None:
    assert domain.check_code(_pending("123456"), "123456", b"k", verified=False) is domain.CodeCheck.ACCEPTED
    assert domain.check_code(_pending("123456"), "654321", b"k", verified=False) is domain.CodeCheck.WRONG
    for pending, error, reason in [
        (_pending("123456", used=True, expired=True), FailedPrecondition, "CODE_ALREADY_USED"),
        (_pending("123456", expired=True, attempts=5), FailedPrecondition, "CODE_EXPIRED"),
        (_pending("123456", attempts=5), ResourceExhausted, "TOO_MANY_ATTEMPTS"),
        (None, FailedPrecondition, "VERIFICATION_NOT_STARTED"),
    ]:
        with pytest.raises(error) as info:
            domain.check_code(pending, "123456", b"k", verified=False)
        assert info.value.reason == reason
    assert domain.wrong_code(_pending("1", attempts=3)).metadata == {"attempts_left": "1"}
