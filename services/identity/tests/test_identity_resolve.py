"""ResolveCustomer through gRPC against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from fte.identity.v1 import identity_pb2, identity_service_pb2
from identity_helpers import (  # type: ignore[import-not-found]
    Channel,
    Identity,
    Kind,
    count_rows,
    email,
    expect_error,
    ident,
    resolve_request,
)


def unique_email(tag: str = "") -> str:
    return f"{tag}{uuid.uuid4().hex[:12]}@example.com"


def unique_phone() -> str:
    # Valid numbers in several area codes over millions of combinations, so tests sharing a
    # database never collide.
    n = uuid.uuid4().int
    area = ("415", "212", "312", "617", "303", "206", "512", "720")[n % 8]
    return f"+1 {area} {200 + (n >> 8) % 800} {(n >> 20) % 10000:04d}"


def by_kind(customer: identity_pb2.Customer, kind: int) -> list[identity_pb2.Identifier]:
    return [i for i in customer.identifiers if i.kind == kind]


async def test_resolve_creates_once_then_finds_the_same_customer_in_any_spelling(identity: Identity) -> None:
    address = unique_email("Mixed.Case.")
    first = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address), name="Ann Lee"))
    assert first.created
    assert first.customer.display_name == "Ann Lee"
    [stored] = first.customer.identifiers
    assert stored.value == address.lower()
    assert stored.raw_value == address
    assert stored.verified  # it arrived on its own channel
    for variant in (address.upper(), f"  {address} ", address.swapcase()):
        again = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(variant)))
        assert not again.created
        assert again.customer.name == first.customer.name
    renamed = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_EMAIL, email(address), name="Ann Lee-Park")
    )
    assert renamed.customer.display_name == "Ann Lee-Park"


async def test_fifty_concurrent_resolves_of_a_new_identifier_create_one_customer(identity: Identity) -> None:
    address = unique_email("race.")
    before = await count_rows(identity.dsn, "SELECT count(*) FROM customers")
    results = await asyncio.gather(
        *(
            identity.stub.ResolveCustomer(
                resolve_request(Channel.CHANNEL_EMAIL, email(address.upper() if n % 2 else address))
            )
            for n in range(50)
        )
    )
    assert len({r.customer.name for r in results}) == 1
    assert sum(r.created for r in results) == 1
    after = await count_rows(identity.dsn, "SELECT count(*) FROM customers")
    assert after - before == 1
    assert await count_rows(identity.dsn, "SELECT count(*) FROM identifiers WHERE value = $1", address.lower()) == 1


async def test_web_forms_prove_nothing_so_each_is_a_claimant_of_its_own(identity: Identity) -> None:
    """Changed with the evidence levels: a web form's email and phone are typed in, so concurrent
    forms with one address no longer share a customer (that shared history with whoever typed the
    address); each holds claims only, and none owns the address."""
    address, phone = unique_email("form."), unique_phone()
    results = await asyncio.gather(
        *(
            identity.stub.ResolveCustomer(
                resolve_request(Channel.CHANNEL_WEB_FORM, email(address), ident(Kind.IDENTIFIER_KIND_PHONE, phone))
            )
            for _ in range(20)
        )
    )
    assert len({r.customer.name for r in results}) == 20
    assert all(r.created for r in results)
    for r in results:
        assert sorted((i.kind, i.verified, i.evidence) for i in r.customer.identifiers) == [
            (Kind.IDENTIFIER_KIND_EMAIL, False, identity_pb2.EVIDENCE_CLAIMED),
            (Kind.IDENTIFIER_KIND_PHONE, False, identity_pb2.EVIDENCE_CLAIMED),
        ]
    # The address arriving authenticated on its own channel is a new, proven customer.
    proven = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    assert proven.created
    [mail] = by_kind(proven.customer, Kind.IDENTIFIER_KIND_EMAIL)
    assert (mail.verified, mail.evidence) == (True, identity_pb2.EVIDENCE_CHANNEL)


async def test_web_form_phone_is_normalised_and_stays_a_claim(identity: Identity) -> None:
    """Changed with the evidence levels: the typed phone used to be stored verified and a second
    form found the first one's customer; both were the bug. Now the phone is a normalised claim."""
    address = unique_email()
    national = "(720) 555-0177"
    first = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WEB_FORM, email(address), ident(Kind.IDENTIFIER_KIND_PHONE, "+1 720 555 0177"))
    )
    [phone] = by_kind(first.customer, Kind.IDENTIFIER_KIND_PHONE)
    assert phone.value == "+17205550177"
    assert not phone.verified
    again = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WEB_FORM, email(address.upper()), ident(Kind.IDENTIFIER_KIND_PHONE, national))
    )
    assert again.customer.name != first.customer.name
    assert [i.value for i in by_kind(again.customer, Kind.IDENTIFIER_KIND_PHONE)] == ["+17205550177"]


async def test_whatsapp_number_and_bsuid_arrive_together_then_bsuid_alone(identity: Identity) -> None:
    digits = str(uuid.uuid4().int)[:20]
    bsuid = f"US.{digits}"
    number = unique_phone()
    first = await identity.stub.ResolveCustomer(
        resolve_request(
            Channel.CHANNEL_WHATSAPP,
            ident(Kind.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{number}"),
            ident(Kind.IDENTIFIER_KIND_WHATSAPP_BSUID, bsuid),
        )
    )
    assert first.created
    assert all(i.verified for i in first.customer.identifiers)
    alone = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP_BSUID, f"whatsapp:{bsuid}"))
    )
    assert alone.customer.name == first.customer.name
    assert not alone.created


async def test_identifiers_of_two_customers_given_together_are_not_merged(identity: Identity) -> None:
    """The documented rule: the owner of the channel's own identifier wins; the other customer's
    identifier becomes an unverified claim of it; nothing moves and nothing merges."""
    address_a, phone_b = unique_email("a."), unique_phone()
    a = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address_a)))
    b = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone_b}"))
    )
    mixed = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WEB_FORM, email(address_a), ident(Kind.IDENTIFIER_KIND_PHONE, phone_b))
    )
    # Changed with the evidence levels: the form's email no longer picks A; the form is a claimant.
    assert mixed.customer.name not in (a.customer.name, b.customer.name)
    claims = {(i.kind, i.verified, i.contested) for i in mixed.customer.identifiers}
    assert claims == {(Kind.IDENTIFIER_KIND_EMAIL, False, True), (Kind.IDENTIFIER_KIND_PHONE, False, True)}
    b_now = await identity.stub.GetCustomer(identity_service_pb2.GetCustomerRequest(name=b.customer.name))
    assert b_now.customer.state == b_now.customer.STATE_ACTIVE
    assert [i.verified for i in by_kind(b_now.customer, Kind.IDENTIFIER_KIND_PHONE)] == [True]
    # The number still resolves to its owner, B, and the address to A.
    owner = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone_b}"))
    )
    assert owner.customer.name == b.customer.name
    again = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address_a)))
    assert again.customer.name == a.customer.name


async def test_a_typed_phone_never_picks_an_existing_customer(identity: Identity) -> None:
    """A web form's phone is only typed in: a new email with someone else's phone is a new customer."""
    owner_email, phone = unique_email("owner."), unique_phone()
    owner = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WEB_FORM, email(owner_email), ident(Kind.IDENTIFIER_KIND_PHONE, phone))
    )
    other = await identity.stub.ResolveCustomer(
        resolve_request(
            Channel.CHANNEL_WEB_FORM, email(unique_email("other.")), ident(Kind.IDENTIFIER_KIND_PHONE, phone)
        )
    )
    assert other.created
    assert other.customer.name != owner.customer.name
    [claim] = by_kind(other.customer, Kind.IDENTIFIER_KIND_PHONE)
    assert not claim.verified


async def test_bad_input_gets_the_right_code_and_writes_nothing(identity: Identity) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    good = email(unique_email())
    cases = [
        (resolve_request(Channel.CHANNEL_UNSPECIFIED, good), "UNKNOWN_CHANNEL"),
        (resolve_request(99, good), "UNKNOWN_CHANNEL"),
        (resolve_request(Channel.CHANNEL_EMAIL), "IDENTIFIERS_REQUIRED"),
        (resolve_request(Channel.CHANNEL_EMAIL, email("not-an-email")), "INVALID_EMAIL"),
        (resolve_request(Channel.CHANNEL_EMAIL, email("x" * 400 + "@example.com")), "IDENTIFIER_TOO_LONG"),
        (resolve_request(Channel.CHANNEL_EMAIL, email("")), "IDENTIFIER_REQUIRED"),
        (resolve_request(Channel.CHANNEL_EMAIL, ident(0, "a@example.com")), "UNKNOWN_IDENTIFIER_KIND"),
        (
            resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, "whatsapp:12")),
            "INVALID_PHONE",
        ),
        (
            resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP_BSUID, "12345")),
            "INVALID_BSUID",
        ),
        (
            resolve_request(Channel.CHANNEL_EMAIL, ident(Kind.IDENTIFIER_KIND_PHONE, unique_phone())),
            "IDENTIFIER_KIND_NOT_ALLOWED",
        ),
        (
            resolve_request(Channel.CHANNEL_WEB_FORM, ident(Kind.IDENTIFIER_KIND_PHONE, unique_phone())),
            "CHANNEL_IDENTIFIER_REQUIRED",
        ),
        (resolve_request(Channel.CHANNEL_WEB_FORM, good, email(unique_email())), "DUPLICATE_IDENTIFIER_KIND"),
        # A valid email with a bad phone: the whole request fails, the email is not stored either.
        (resolve_request(Channel.CHANNEL_WEB_FORM, good, ident(Kind.IDENTIFIER_KIND_PHONE, "555")), "INVALID_PHONE"),
        (resolve_request(Channel.CHANNEL_EMAIL, good, name="n" * 201), "DISPLAY_NAME_TOO_LONG"),
    ]
    before = await count_rows(identity.dsn, "SELECT count(*) FROM customers")
    for request, reason in cases:
        err = await expect_error(identity.stub.ResolveCustomer(request), invalid, reason)
        assert good.value not in (err.details() or "")
    assert await count_rows(identity.dsn, "SELECT count(*) FROM customers") == before
    assert await count_rows(identity.dsn, "SELECT count(*) FROM identifiers WHERE value = $1", good.value) == 0


async def test_whatsapp_number_and_id_of_two_customers_resolve_to_the_number_owner(identity: Identity) -> None:
    number = f"whatsapp:{unique_phone()}"
    bsuid = f"BR.{str(uuid.uuid4().int)[:20]}"
    by_number = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, number))
    )
    by_id = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP_BSUID, bsuid))
    )
    both = await identity.stub.ResolveCustomer(
        resolve_request(
            Channel.CHANNEL_WHATSAPP,
            ident(Kind.IDENTIFIER_KIND_WHATSAPP_BSUID, bsuid),
            ident(Kind.IDENTIFIER_KIND_WHATSAPP, number),
        )
    )
    assert both.customer.name == by_number.customer.name
    assert [i.verified for i in by_kind(both.customer, Kind.IDENTIFIER_KIND_WHATSAPP_BSUID)] == [False]
    alone = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP_BSUID, bsuid))
    )
    assert alone.customer.name == by_id.customer.name


async def test_an_unauthenticated_email_is_a_claim_and_never_reaches_the_owner(identity: Identity) -> None:
    address = unique_email("spoofed.")
    owner = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    spoof = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_EMAIL, email(address), authenticated=False)
    )
    assert spoof.created
    assert spoof.customer.name != owner.customer.name
    [claim] = by_kind(spoof.customer, Kind.IDENTIFIER_KIND_EMAIL)
    assert (claim.verified, claim.contested, claim.evidence) == (False, True, identity_pb2.EVIDENCE_CLAIMED)


async def test_a_whatsapp_sender_and_a_proven_phone_are_one_customer(identity: Identity) -> None:
    """The number proven by a code (sent over WhatsApp) is the WhatsApp sender's: a later message
    from that number resolves to the customer who proved it, with no second customer."""
    address, phone = unique_email("phone."), unique_phone()
    customer = (await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))).customer
    await identity.stub.LinkIdentifier(
        identity_service_pb2.LinkIdentifierRequest(
            customer=customer.name, identifier=ident(Kind.IDENTIFIER_KIND_PHONE, phone)
        )
    )
    code = (
        await identity.stub.StartVerification(
            identity_service_pb2.StartVerificationRequest(
                customer=customer.name, identifier=ident(Kind.IDENTIFIER_KIND_PHONE, phone)
            )
        )
    ).code
    done = await identity.stub.CompleteVerification(
        identity_service_pb2.CompleteVerificationRequest(
            customer=customer.name, identifier=ident(Kind.IDENTIFIER_KIND_PHONE, phone), code=code
        )
    )
    assert not done.HasField("merge")
    [proven] = by_kind(done.customer, Kind.IDENTIFIER_KIND_PHONE)
    assert (proven.verified, proven.evidence) == (True, identity_pb2.EVIDENCE_CODE)
    wa = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone}"))
    )
    assert not wa.created
    assert wa.customer.name == customer.name
    [sender] = by_kind(wa.customer, Kind.IDENTIFIER_KIND_WHATSAPP)
    assert (sender.verified, sender.evidence) == (True, identity_pb2.EVIDENCE_CHANNEL)
