"""LinkIdentifier, StartVerification and CompleteVerification through gRPC."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from fte.identity.v1 import identity_pb2, identity_service_pb2
from identity_helpers import (  # type: ignore[import-not-found]
    Channel,
    Identity,
    Kind,
    StartIdentity,
    count_rows,
    email,
    expect_error,
    ident,
    resolve_request,
)

Req = identity_service_pb2


def new_email(tag: str) -> str:
    return f"{tag}.{uuid.uuid4().hex[:10]}@example.net"


def new_whatsapp() -> str:
    n = uuid.uuid4().int
    return f"whatsapp:+44 7400 {n % 1_000_000:06d}"


async def whatsapp_customer(identity: Identity) -> identity_pb2.Customer:
    response = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_WHATSAPP, ident(Kind.IDENTIFIER_KIND_WHATSAPP, new_whatsapp()))
    )
    customer: identity_pb2.Customer = response.customer
    return customer


async def claim(identity: Identity, customer: str, address: str) -> identity_pb2.Customer:
    response = await identity.stub.LinkIdentifier(
        Req.LinkIdentifierRequest(customer=customer, identifier=email(address))
    )
    result: identity_pb2.Customer = response.customer
    return result


async def test_a_claimed_email_is_unverified_and_does_not_capture_that_email(identity: Identity) -> None:
    """History is never shared across an unverified link: the claimed address arriving on its own
    channel is someone we must not assume to be the claimant."""
    customer = await whatsapp_customer(identity)
    address = new_email("claimed")
    linked = await claim(identity, customer.name, address.upper())
    [claimed] = [i for i in linked.identifiers if i.kind == Kind.IDENTIFIER_KIND_EMAIL]
    assert claimed.value == address
    assert not claimed.verified
    # Linking the same claim again is a no-op.
    again = await claim(identity, customer.name, address)
    assert len(again.identifiers) == len(linked.identifiers)
    assert claimed.evidence == identity_pb2.EVIDENCE_CLAIMED
    by_email = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    assert by_email.created
    assert by_email.customer.name != customer.name


async def test_a_vouched_link_is_verified_and_resolves(identity: Identity) -> None:
    customer = await whatsapp_customer(identity)
    address = new_email("vouched")
    linked = await identity.stub.LinkIdentifier(
        Req.LinkIdentifierRequest(customer=customer.name, identifier=email(address), verified=True)
    )
    assert all(i.verified for i in linked.customer.identifiers)
    found = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    assert found.customer.name == customer.name
    assert not found.created


async def test_link_errors(identity: Identity) -> None:
    owner = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(new_email("owner"))))
    other = await whatsapp_customer(identity)
    owned = owner.customer.identifiers[0].value
    await expect_error(
        identity.stub.LinkIdentifier(
            Req.LinkIdentifierRequest(customer=other.name, identifier=email(owned), verified=True)
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDENTIFIER_OWNED_BY_OTHER_CUSTOMER",
    )
    await expect_error(
        identity.stub.LinkIdentifier(
            Req.LinkIdentifierRequest(customer=f"customers/{uuid.uuid4()}", identifier=email(new_email("x")))
        ),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    await expect_error(
        identity.stub.LinkIdentifier(Req.LinkIdentifierRequest(customer="people/1", identifier=email(new_email("x")))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_NAME",
    )
    await expect_error(
        identity.stub.LinkIdentifier(Req.LinkIdentifierRequest(customer=other.name, identifier=email("nope"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_EMAIL",
    )
    await expect_error(
        identity.stub.LinkIdentifier(Req.LinkIdentifierRequest(customer=other.name)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "IDENTIFIER_REQUIRED",
    )


async def test_verification_wrong_code_then_right_code_then_replay(identity: Identity) -> None:
    customer = await whatsapp_customer(identity)
    address = new_email("verify")
    await claim(identity, customer.name, address)
    started = await identity.stub.StartVerification(
        Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
    )
    code = started.code
    assert len(code) == 6
    assert code.isdigit()
    assert started.expire_time.ToSeconds() > 0
    # Only a hash is stored: the code itself appears in no column.
    stored = await count_rows(
        identity.dsn,
        """SELECT count(*) FROM verification_codes v JOIN identifiers i ON i.id = v.identifier_id
           WHERE i.value = $1 AND position(convert_to($2, 'UTF8') in v.code_hash) = 0
             AND length(v.code_hash) = 32""",
        address,
        code,
    )
    assert stored == 1
    wrong = "000000" if code != "000000" else "111111"
    err = await expect_error(
        identity.stub.CompleteVerification(
            Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=wrong)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "WRONG_CODE",
    )
    assert "wrong" in (err.details() or "")
    done = await identity.stub.CompleteVerification(
        Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address.upper()), code=code)
    )
    [verified] = [i for i in done.customer.identifiers if i.kind == Kind.IDENTIFIER_KIND_EMAIL]
    assert verified.verified
    # Now the email resolves to the customer, whose history it may share.
    found = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    assert found.customer.name == customer.name
    await expect_error(
        identity.stub.CompleteVerification(
            Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=code)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CODE_ALREADY_USED",
    )
    await expect_error(
        identity.stub.StartVerification(
            Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ALREADY_VERIFIED",
    )


async def test_too_many_wrong_codes_lock_the_code(identity: Identity) -> None:
    customer = await whatsapp_customer(identity)
    address = new_email("attempts")
    await claim(identity, customer.name, address)
    code = (
        await identity.stub.StartVerification(
            Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
        )
    ).code
    wrong = "000000" if code != "000000" else "111111"
    request = Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=wrong)
    for _ in range(5):  # the default limit
        await expect_error(identity.stub.CompleteVerification(request), grpc.StatusCode.INVALID_ARGUMENT, "WRONG_CODE")
    right = Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=code)
    await expect_error(
        identity.stub.CompleteVerification(right), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS"
    )
    # A new code starts over, and the old one no longer works.
    fresh = (
        await identity.stub.StartVerification(
            Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
        )
    ).code
    if fresh != code:
        await expect_error(identity.stub.CompleteVerification(right), grpc.StatusCode.INVALID_ARGUMENT, "WRONG_CODE")
    done = await identity.stub.CompleteVerification(
        Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=fresh)
    )
    assert all(i.verified for i in done.customer.identifiers)


async def test_an_expired_code_is_rejected(start_identity: StartIdentity) -> None:
    identity = await start_identity(verification_code_ttl_seconds=0.3)
    customer = await whatsapp_customer(identity)
    address = new_email("expiry")
    await claim(identity, customer.name, address)
    code = (
        await identity.stub.StartVerification(
            Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
        )
    ).code
    await asyncio.sleep(0.6)
    await expect_error(
        identity.stub.CompleteVerification(
            Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=code)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CODE_EXPIRED",
    )
    current = await identity.stub.GetCustomer(Req.GetCustomerRequest(name=customer.name))
    assert not next(i for i in current.customer.identifiers if i.kind == Kind.IDENTIFIER_KIND_EMAIL).verified


async def test_verification_errors(identity: Identity) -> None:
    customer = await whatsapp_customer(identity)
    address = new_email("errors")
    await expect_error(
        identity.stub.StartVerification(
            Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
        ),
        grpc.StatusCode.NOT_FOUND,
        "IDENTIFIER_NOT_LINKED",
    )
    await claim(identity, customer.name, address)
    await expect_error(
        identity.stub.CompleteVerification(
            Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code="123456")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "VERIFICATION_NOT_STARTED",
    )
    await expect_error(
        identity.stub.CompleteVerification(
            Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code="")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CODE_REQUIRED",
    )


async def test_proving_an_identifier_another_customer_owns_merges_the_claimant_into_it(identity: Identity) -> None:
    """A claim proven by a code sent to the owner's own address: the two are one person. The
    claimant is merged into the owner with an audit record, and a replayed code is refused."""
    address = new_email("owned")
    owner = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    claimant = await whatsapp_customer(identity)
    claimed = await claim(identity, claimant.name, address)
    [pending] = [i for i in claimed.identifiers if i.kind == Kind.IDENTIFIER_KIND_EMAIL]
    assert pending.contested
    assert not pending.verified
    code = (
        await identity.stub.StartVerification(
            Req.StartVerificationRequest(customer=claimant.name, identifier=email(address))
        )
    ).code
    done = await identity.stub.CompleteVerification(
        Req.CompleteVerificationRequest(customer=claimant.name, identifier=email(address), code=code)
    )
    assert done.customer.name == owner.customer.name
    assert (done.merge.source_customer, done.merge.target_customer) == (claimant.name, owner.customer.name)
    assert "one-time code" in done.merge.reason
    kinds = sorted((i.kind, i.verified) for i in done.customer.identifiers)
    assert (Kind.IDENTIFIER_KIND_EMAIL, True) in kinds
    assert (Kind.IDENTIFIER_KIND_WHATSAPP, True) in kinds
    assert (
        await count_rows(
            identity.dsn,
            "SELECT count(*) FROM merges WHERE source_customer = $1",
            uuid.UUID(claimant.name.split("/")[1]),
        )
        == 1
    )
    found = await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address)))
    assert found.customer.name == owner.customer.name
    gone = await identity.stub.GetCustomer(Req.GetCustomerRequest(name=claimant.name))
    assert gone.customer.name == owner.customer.name
    await expect_error(
        identity.stub.CompleteVerification(
            Req.CompleteVerificationRequest(customer=claimant.name, identifier=email(address), code=code)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CODE_ALREADY_USED",
    )


async def test_new_codes_per_hour_are_capped(start_identity: StartIdentity) -> None:
    identity = await start_identity(verification_max_codes_per_hour=2)
    customer = await whatsapp_customer(identity)
    address = new_email("cap")
    await claim(identity, customer.name, address)
    request = Req.StartVerificationRequest(customer=customer.name, identifier=email(address))
    await identity.stub.StartVerification(request)
    last = await identity.stub.StartVerification(request)
    await expect_error(identity.stub.StartVerification(request), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_CODES")
    # The refused request did not supersede the last code.
    done = await identity.stub.CompleteVerification(
        Req.CompleteVerificationRequest(customer=customer.name, identifier=email(address), code=last.code)
    )
    assert all(i.verified for i in done.customer.identifiers)
