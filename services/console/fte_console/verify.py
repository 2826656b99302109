"""Verifying a claim from the customer page: staff vouch that the customer controls a claimed
identifier (they checked it another way), with a reason. Admins only, like merging: a verified
identifier joins the customer's history across channels.

Through `IdentityService.LinkIdentifier` with `verified` (identity records it as EVIDENCE_STAFF);
the console's audit log keeps who did it and why. Identity refuses when another customer holds the
identifier verified: then the two are the same person only if an admin merges them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from fte.identity.v1 import identity_pb2, identity_service_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from fte_console import customers
from fte_console.accounts import Role, Session

# The kinds a card shows, by name ("email" -> IDENTIFIER_KIND_EMAIL).
KINDS = {name: value for value, name in customers.KINDS.items()}
MAX_VALUE = 320
OWNED_ELSEWHERE = (
    "another customer holds this identifier verified: verifying it here would give this customer "
    "their history. If they are the same person, merge the two customers instead."
)

Action = Callable[[Request, Session, FormData], Awaitable[Response]]


def verify_claim(headers: Mapping[str, str]) -> Action:
    """The handler of POST /customers/{customer}/verify (wrapped by the app's `staff_action`)."""

    def refuse(status: int, text: str) -> Response:
        return PlainTextResponse(text, status_code=status, headers=dict(headers))

    async def handler(request: Request, session: Session, form: FormData) -> Response:
        if session.user.role is not Role.ADMIN:
            return refuse(403, "only an admin may verify a claimed identifier")
        customer = customers.customer_id(request.path_params["customer"])
        if customer is None:
            return refuse(404, "no such customer")
        name = f"customers/{customer}"
        kind = KINDS.get(str(form.get("kind", "")))
        value = str(form.get("value", "")).strip()
        reason = str(form.get("reason", "")).strip()
        if kind is None or not 0 < len(value) <= MAX_VALUE:
            return refuse(400, "the form names no claimed identifier; reload the page")
        if not 0 < len(reason) <= customers.MAX_REASON:
            return refuse(400, f"verifying needs a reason of 1 to {customers.MAX_REASON} characters")
        deps = request.app.state.deps
        found = await _customer(deps, name)
        if isinstance(found, Response):
            return found
        claim = next((i for i in found.identifiers if i.kind == kind and i.value == value), None)
        if claim is None:
            return refuse(404, "this customer has no such identifier")
        if claim.verified:
            return refuse(409, "this identifier is already verified")
        try:
            await deps.identity.LinkIdentifier(
                identity_service_pb2.LinkIdentifierRequest(
                    customer=name,
                    identifier=identity_service_pb2.IdentifierInput(kind=kind, value=value),  # type: ignore[arg-type]
                    verified=True,
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # a contested claim
                return refuse(409, OWNED_ELSEWHERE)
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return refuse(409, exc.details() or "the customer changed; reload the page")
            return refuse(502, "the identity service did not answer; try again")
        await deps.accounts.audit(
            session.user.username, "verify", name, kind=customers.KINDS.get(kind, ""), reason=reason
        )
        return RedirectResponse(f"/customers/{customer}", 303, headers=dict(headers))

    return handler


async def _customer(deps: Any, name: str) -> identity_pb2.Customer | Response:
    try:
        found = await deps.identity.GetCustomer(identity_service_pb2.GetCustomerRequest(name=name))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return PlainTextResponse("no such customer", status_code=404)
        return PlainTextResponse("the identity service did not answer; try again", status_code=502)
    customer: identity_pb2.Customer = found.customer
    if customer.name != name:
        return PlainTextResponse("this customer was merged; reload the page", status_code=409)
    return customer
