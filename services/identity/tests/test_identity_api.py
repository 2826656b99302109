"""Scopes, GetCustomer, ListCustomers pagination and filtering, and what reaches the logs."""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest
from fte.identity.v1 import identity_service_pb2
from identity_helpers import (  # type: ignore[import-not-found]
    READER_TOKEN,
    Channel,
    Identity,
    Kind,
    StartIdentity,
    email,
    expect_error,
    ident,
    resolve_request,
)

Req = identity_service_pb2


async def test_scopes(identity: Identity, tokens: dict[str, str]) -> None:
    created = await identity.stub.ResolveCustomer(
        resolve_request(Channel.CHANNEL_EMAIL, email(f"s.{uuid.uuid4().hex[:8]}@example.com"))
    )
    name = created.customer.name
    reader = identity.client(READER_TOKEN)
    assert (await reader.GetCustomer(Req.GetCustomerRequest(name=name))).customer.name == name
    assert (await reader.ListCustomers(Req.ListCustomersRequest(page_size=1))).customers
    denied = grpc.StatusCode.PERMISSION_DENIED
    writes = [
        reader.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email("r@example.com"))),
        reader.LinkIdentifier(Req.LinkIdentifierRequest(customer=name, identifier=email("r@example.com"))),
        reader.StartVerification(Req.StartVerificationRequest(customer=name, identifier=email("r@example.com"))),
        reader.CompleteVerification(
            Req.CompleteVerificationRequest(customer=name, identifier=email("r@example.com"), code="1")
        ),
        reader.MergeCustomers(Req.MergeCustomersRequest(source_customer=name, target_customer=name, reason="x")),
        reader.EraseCustomer(Req.EraseCustomerRequest(name=name, reason="x")),
    ]
    for call in writes:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == denied
    outsider = identity.client(tokens["kb-reader"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await outsider.GetCustomer(Req.GetCustomerRequest(name=name))
    assert info.value.code() == denied
    anonymous = identity.client(None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await anonymous.GetCustomer(Req.GetCustomerRequest(name=name))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The customer is untouched by the refused writes.
    after = await identity.stub.GetCustomer(Req.GetCustomerRequest(name=name))
    assert after.customer.state == after.customer.STATE_ACTIVE
    assert len(after.customer.identifiers) == 1


async def test_get_errors(identity: Identity) -> None:
    await expect_error(
        identity.stub.GetCustomer(Req.GetCustomerRequest(name=f"customers/{uuid.uuid4()}")),
        grpc.StatusCode.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    for bad in ("", "customers/", "customers/abc", "tickets/1", "customers/a/b"):
        await expect_error(
            identity.stub.GetCustomer(Req.GetCustomerRequest(name=bad)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_NAME",
        )


async def test_list_pages_newest_first_and_filters_by_identifier(start_identity: StartIdentity) -> None:
    identity = await start_identity()
    names = []
    for n in range(23):
        r = await identity.stub.ResolveCustomer(
            resolve_request(Channel.CHANNEL_EMAIL, email(f"page{n}@list.example"), name=f"P{n}")
        )
        names.append(r.customer.name)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await identity.stub.ListCustomers(Req.ListCustomersRequest(page_size=10, page_token=token))
        seen.extend(c.name for c in page.customers)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(names))
    default = await identity.stub.ListCustomers(Req.ListCustomersRequest())
    assert len(default.customers) == 20
    one = await identity.stub.ListCustomers(
        Req.ListCustomersRequest(identifier=email("  PAGE7@List.Example "), page_size=5)
    )
    assert [c.name for c in one.customers] == [names[7]]
    assert not one.next_page_token
    none = await identity.stub.ListCustomers(Req.ListCustomersRequest(identifier=email("nobody@list.example")))
    assert list(none.customers) == []
    first = await identity.stub.ListCustomers(Req.ListCustomersRequest(page_size=10))
    await expect_error(
        identity.stub.ListCustomers(
            Req.ListCustomersRequest(
                page_size=10, page_token=first.next_page_token, identifier=email("page1@list.example")
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    await expect_error(
        identity.stub.ListCustomers(Req.ListCustomersRequest(page_token="garbage!")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    await expect_error(
        identity.stub.ListCustomers(Req.ListCustomersRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    )
    await expect_error(
        identity.stub.ListCustomers(Req.ListCustomersRequest(identifier=ident(Kind.IDENTIFIER_KIND_PHONE, "12"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PHONE",
    )


async def test_no_identifier_or_name_reaches_the_logs(identity: Identity, caplog: pytest.LogCaptureFixture) -> None:
    address = f"Secret.Person.{uuid.uuid4().hex[:6]}@example.com"
    phone = "+1 415 555 0166"
    name = f"Secret Person {uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.DEBUG):
        created = await identity.stub.ResolveCustomer(
            resolve_request(
                Channel.CHANNEL_WEB_FORM, email(address), ident(Kind.IDENTIFIER_KIND_PHONE, phone), name=name
            )
        )
        await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address + "x"), name=name))
        await identity.stub.LinkIdentifier(
            Req.LinkIdentifierRequest(customer=created.customer.name, identifier=email("other." + address))
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await identity.stub.ResolveCustomer(resolve_request(Channel.CHANNEL_EMAIL, email(address + " bad")))
    assert caplog.records, "the calls were logged"
    text = "\n".join(
        f"{r.getMessage()} {[v for k, v in vars(r).items() if k not in ('msg', 'args')]}" for r in caplog.records
    ).lower()
    for secret in (address.lower(), "4155550166", name.lower(), "secret.person"):
        assert secret not in text
