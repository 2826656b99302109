"""IdentityService: request validation and proto mapping around the operations (customers.py)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte_runtime import pagination
from fte_runtime.context import principal_var
from fte_runtime.errors import FieldViolation, InvalidArgument
from fte_runtime.idempotency import check_request_id
from fte_runtime.identifiers import InvalidIdentifier, Normalized, normalize
from fte_runtime.names import parse_name
from prometheus_client import Counter

from fte_identity import domain
from fte_identity.customers import Customers
from fte_identity.domain import ACTIVE, ERASED, MERGED
from fte_identity.names import customer_name, timestamp
from fte_identity.rows import CustomerRow, MergeRow

Channel = common_pb2.Channel
log = logging.getLogger("fte.identity")

MAX_DISPLAY_NAME = 200
MAX_REASON = 1000
MAX_CODE = 32

RESOLVES = Counter("identity_resolves_total", "ResolveCustomer calls that succeeded, by outcome.", ["outcome"])

_STATES = {
    ACTIVE: identity_pb2.Customer.STATE_ACTIVE,
    MERGED: identity_pb2.Customer.STATE_MERGED,
    ERASED: identity_pb2.Customer.STATE_ERASED,
}


def _invalid(field: str, reason: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {description}", violations=[FieldViolation(field, description)], reason=reason)


def to_proto(customer: CustomerRow) -> identity_pb2.Customer:
    return identity_pb2.Customer(
        name=customer_name(customer.id),
        display_name=customer.display_name,
        identifiers=[
            identity_pb2.Identifier(
                kind=i.kind,  # type: ignore[arg-type]
                value=i.value,
                raw_value=i.raw_value,
                verified=i.verified,
                create_time=timestamp(i.create_time),
                evidence=i.evidence,  # type: ignore[arg-type]
                contested=i.contested,
                verification_expire_time=(
                    timestamp(i.verification_expire_time) if i.verification_expire_time else None
                ),
            )
            for i in customer.identifiers
        ],
        state=_STATES[customer.state],
        merged_into=customer_name(customer.merged_into) if customer.merged_into else "",
        create_time=timestamp(customer.create_time),
        update_time=timestamp(customer.update_time),
    )


def merge_to_proto(merge: MergeRow) -> identity_pb2.MergeRecord:
    return identity_pb2.MergeRecord(
        source_customer=customer_name(merge.source),
        target_customer=customer_name(merge.target),
        actor=merge.actor,
        reason=merge.reason,
        merge_time=timestamp(merge.merge_time),
    )


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        customers: Customers,
        *,
        default_region: str,
        on_event: Callable[[], None] = lambda: None,
    ) -> None:
        self._customers = customers
        self._region = default_region
        # Called after a commit that wrote to the outbox, so the relay publishes without waiting.
        self._on_event = on_event

    # -- helpers ---------------------------------------------------------------------------

    def _identifier(self, given: identity_service_pb2.IdentifierInput, field: str) -> Normalized:
        try:
            return normalize(given.kind, given.value, self._region)
        except InvalidIdentifier as exc:
            subfield = "kind" if exc.reason == "UNKNOWN_IDENTIFIER_KIND" else "value"
            raise _invalid(f"{field}.{subfield}", exc.reason, exc.message) from exc

    def _required_identifier(
        self,
        request: identity_service_pb2.LinkIdentifierRequest
        | identity_service_pb2.StartVerificationRequest
        | identity_service_pb2.CompleteVerificationRequest,
    ) -> Normalized:
        if not request.HasField("identifier"):
            raise _invalid("identifier", "IDENTIFIER_REQUIRED", "is required")
        return self._identifier(request.identifier, "identifier")

    @staticmethod
    def _customer_id(name: str, field: str) -> uuid.UUID:
        raw = parse_name(name, "customers", field)
        try:
            return uuid.UUID(raw)
        except ValueError as exc:
            raise _invalid(field, "INVALID_NAME", "must look like 'customers/{id}'") from exc

    @staticmethod
    def _text(value: str, field: str, limit: int, *, required: bool, reason: str) -> str:
        text = value.strip()
        if required and not text:
            raise _invalid(field, f"{reason}_REQUIRED", "is required")
        if len(text) > limit:
            raise _invalid(field, f"{reason}_TOO_LONG", f"must be at most {limit} characters")
        return text

    @staticmethod
    def _actor() -> str:
        principal = principal_var.get()
        return principal.name if principal is not None else "unknown"

    # -- RPCs ------------------------------------------------------------------------------

    async def ResolveCustomer(
        self, request: identity_service_pb2.ResolveCustomerRequest, context: Any
    ) -> identity_service_pb2.ResolveCustomerResponse:
        display_name = self._text(
            request.display_name, "display_name", MAX_DISPLAY_NAME, required=False, reason="DISPLAY_NAME"
        )
        idents = [self._identifier(given, f"identifiers[{n}]") for n, given in enumerate(request.identifiers)]
        sightings = domain.sightings(request.channel, idents, sender_authenticated=request.sender_authenticated)
        customer, created = await self._customers.resolve(sightings, display_name)
        RESOLVES.labels("created" if created else "found").inc()
        return identity_service_pb2.ResolveCustomerResponse(customer=to_proto(customer), created=created)

    async def GetCustomer(
        self, request: identity_service_pb2.GetCustomerRequest, context: Any
    ) -> identity_service_pb2.GetCustomerResponse:
        customer = await self._customers.get(self._customer_id(request.name, "name"))
        return identity_service_pb2.GetCustomerResponse(customer=to_proto(customer))

    async def ListCustomers(
        self, request: identity_service_pb2.ListCustomersRequest, context: Any
    ) -> identity_service_pb2.ListCustomersResponse:
        size = pagination.page_size(request.page_size)
        ident = self._identifier(request.identifier, "identifier") if request.HasField("identifier") else None
        page = pagination.Page(size, request.page_token, {"kind": ident.kind, "value": ident.value} if ident else None)
        after: tuple[datetime, uuid.UUID] | None = None
        if page.position is not None:
            try:
                after = (datetime.fromisoformat(page.position[0]), uuid.UUID(page.position[1]))
            except (TypeError, ValueError, IndexError, KeyError) as exc:
                raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN") from exc
        customers, more = await self._customers.list(size, after, ident)
        token = (
            page.next_token([customers[-1].create_time.isoformat(), str(customers[-1].id)], more) if customers else ""
        )
        return identity_service_pb2.ListCustomersResponse(
            customers=[to_proto(c) for c in customers], next_page_token=token
        )

    async def LinkIdentifier(
        self, request: identity_service_pb2.LinkIdentifierRequest, context: Any
    ) -> identity_service_pb2.LinkIdentifierResponse:
        customer_id = self._customer_id(request.customer, "customer")
        ident = self._required_identifier(request)
        customer = await self._customers.link(customer_id, ident, request.verified)
        return identity_service_pb2.LinkIdentifierResponse(customer=to_proto(customer))

    async def StartVerification(
        self, request: identity_service_pb2.StartVerificationRequest, context: Any
    ) -> identity_service_pb2.StartVerificationResponse:
        customer_id = self._customer_id(request.customer, "customer")
        ident = self._required_identifier(request)
        code, expire_time = await self._customers.start_verification(customer_id, ident)
        return identity_service_pb2.StartVerificationResponse(code=code, expire_time=timestamp(expire_time))

    async def CompleteVerification(
        self, request: identity_service_pb2.CompleteVerificationRequest, context: Any
    ) -> identity_service_pb2.CompleteVerificationResponse:
        customer_id = self._customer_id(request.customer, "customer")
        ident = self._required_identifier(request)
        code = self._text(request.code, "code", MAX_CODE, required=True, reason="CODE")
        customer, merge = await self._customers.complete_verification(customer_id, ident, code, actor=self._actor())
        response = identity_service_pb2.CompleteVerificationResponse(customer=to_proto(customer))
        if merge is not None:
            self._on_event()
            response.merge.CopyFrom(merge_to_proto(merge))
            log.info(
                "customers merged by a one-time code",
                extra={"source": customer_name(merge.source), "target": customer_name(merge.target)},
            )
        return response

    async def MergeCustomers(
        self, request: identity_service_pb2.MergeCustomersRequest, context: Any
    ) -> identity_service_pb2.MergeCustomersResponse:
        source = self._customer_id(request.source_customer, "source_customer")
        target = self._customer_id(request.target_customer, "target_customer")
        if source == target:
            raise _invalid("target_customer", "MERGE_INTO_SELF", "a customer cannot be merged into itself")
        reason = self._text(request.reason, "reason", MAX_REASON, required=True, reason="REASON")
        request_id = check_request_id(request.request_id.strip())
        customer, merge = await self._customers.merge(
            source, target, actor=self._actor(), reason=reason, request_id=request_id or None
        )
        self._on_event()
        # Resource names and the principal only: never identifiers or names.
        log.info(
            "customers merged",
            extra={"source": customer_name(merge.source), "target": customer_name(merge.target), "actor": merge.actor},
        )
        return identity_service_pb2.MergeCustomersResponse(customer=to_proto(customer), merge=merge_to_proto(merge))

    async def EraseCustomer(
        self, request: identity_service_pb2.EraseCustomerRequest, context: Any
    ) -> identity_service_pb2.EraseCustomerResponse:
        customer_id = self._customer_id(request.name, "name")
        reason = self._text(request.reason, "reason", MAX_REASON, required=True, reason="REASON")
        check_request_id(request.request_id)  # erasing is idempotent by customer already
        if await self._customers.erase(customer_id, actor=self._actor(), reason=reason):
            self._on_event()
            log.info("customer erased", extra={"customer": customer_name(customer_id), "actor": self._actor()})
        return identity_service_pb2.EraseCustomerResponse()


METHOD_SCOPES = {
    "ResolveCustomer": "identity.write",
    "GetCustomer": "identity.read",
    "ListCustomers": "identity.read",
    "LinkIdentifier": "identity.write",
    "StartVerification": "identity.write",
    "CompleteVerification": "identity.write",
    "MergeCustomers": "identity.write",
    "EraseCustomer": "identity.write",
}
