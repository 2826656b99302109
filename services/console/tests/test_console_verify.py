"""Verifying a claimed identifier from the customer page, through the real console, Envoy and
IdentityService: an admin with a reason; the card then shows it verified by staff and the audit
trail lists who did it. A claim on what another customer holds verified is refused (merge them
instead), and an agent is neither offered the form nor allowed the action."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_stack.stack import Stack
from test_console_stack import add_user, csrf, new_phone, sign_in, ticket_of, whatsapp  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka
EMAIL = identity_pb2.IDENTIFIER_KIND_EMAIL


@pytest.fixture
async def console(full_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{full_stack.ports['console']}", timeout=15) as client:
        yield client


async def link(stack: Stack, customer: str, address: str, *, verified: bool) -> None:
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as channel:
        await identity_service_pb2_grpc.IdentityServiceStub(channel).LinkIdentifier(
            identity_service_pb2.LinkIdentifierRequest(
                customer=customer,
                identifier=identity_service_pb2.IdentifierInput(kind=EMAIL, value=address),
                verified=verified,
            )
        )


def card_line(page: str, value: str) -> str:
    card = re.search(r'<ul class="identifiers" id="identifiers">(.*?)</ul>', page, re.S)
    assert card, "the page has the customer card"
    line = next((li for li in card.group(1).split("<li>") if value in li), "")
    assert line, f"{value} is not on the card"
    return line


async def test_an_admin_verifies_a_claim_with_a_reason_and_a_contested_one_is_refused(
    full_stack: Stack, console: httpx.AsyncClient
) -> None:
    staff, admin = f"joe-{uuid.uuid4().hex[:8]}", f"ada-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, staff)
    await add_user(full_stack, admin, "admin")
    gateway = f"http://127.0.0.1:{full_stack.ports['gateway']}"
    markers = [uuid.uuid4().hex[:8] for _ in range(2)]
    for marker in markers:
        await whatsapp(gateway, new_phone(), f"I was charged twice, I want my money back now {marker}")
    claimant, holder = [(await ticket_of(full_stack, m)).customer for m in markers]
    own, taken = f"own.{markers[0]}@customer.example", f"taken.{markers[1]}@customer.example"
    await link(full_stack, holder, taken, verified=True)  # the other customer proved it
    await link(full_stack, claimant, own, verified=False)  # typed by the customer: claims
    await link(full_stack, claimant, taken, verified=False)
    path = f"/{claimant}"

    assert (await sign_in(console, staff)).status_code == 303
    page = (await console.get(path)).text
    assert 'class="verify-form"' not in page  # not offered to an agent...
    form = {"csrf_token": csrf(page), "kind": "email", "value": own, "reason": "called them back"}
    refused = await console.post(f"{path}/verify", data=form)
    assert (refused.status_code, refused.text) == (403, "only an admin may verify a claimed identifier")
    assert (await console.post(f"{path}/verify", data={**form, "csrf_token": "x"})).status_code == 403

    console.cookies.clear()
    assert (await sign_in(console, admin)).status_code == 303
    page = (await console.get(path)).text
    assert '<span class="badge evidence-claimed">claimed</span>' in card_line(page, own)
    assert page.count('class="verify-form"') == 2  # one form per claim
    form = {**form, "csrf_token": csrf(page)}
    no_reason = await console.post(f"{path}/verify", data={**form, "reason": " "})
    assert no_reason.status_code == 400
    assert "needs a reason" in no_reason.text
    unknown = await console.post(f"{path}/verify", data={**form, "value": "nobody@customer.example"})
    assert unknown.status_code == 404

    verified = await console.post(f"{path}/verify", data=form)
    assert (verified.status_code, verified.headers["location"]) == (303, path)
    page = (await console.get(path)).text
    line = card_line(page, own)
    assert '<span class="badge evidence-verified">verified</span> <span class="proof">by staff</span>' in line
    assert (admin, "verify") in re.findall(r"UTC (\S+): (\w+)</li>", page)
    again = await console.post(f"{path}/verify", data=form)
    assert (again.status_code, again.text) == (409, "this identifier is already verified")

    contested = await console.post(f"{path}/verify", data={**form, "value": taken})
    assert contested.status_code == 409
    assert "another customer holds this identifier verified" in contested.text
    assert "merge the two customers instead" in contested.text
    page = (await console.get(path)).text
    assert '<span class="badge evidence-claimed">claimed</span>' in card_line(page, taken)
    assert re.findall(r"UTC (\S+): (\w+)</li>", page).count((admin, "verify")) == 1

    # Identity holds what the card shows: proven by staff, and the contested claim still a claim.
    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        found = await identity_service_pb2_grpc.IdentityServiceStub(channel).GetCustomer(
            identity_service_pb2.GetCustomerRequest(name=claimant)
        )
    by_value = {i.value: i for i in found.customer.identifiers}
    assert (by_value[own].verified, by_value[own].evidence) == (True, identity_pb2.EVIDENCE_STAFF)
    assert (by_value[taken].verified, by_value[taken].contested) == (False, True)
