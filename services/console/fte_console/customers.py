"""The customer card and page: identifiers with their evidence level, from IdentityService; the
history from AgentService. Merging and erasing are for admins (the routes check the role)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fte.identity.v1 import identity_pb2
from fte_runtime.enums import value_names

KINDS = value_names(identity_pb2.IdentifierKind)
STATES = value_names(identity_pb2.Customer.State)
_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
MAX_REASON = 500


@dataclass(frozen=True)
class IdentifierView:
    kind: str
    value: str
    evidence: str  # "verified" (proven control) or "claimed" (typed or mentioned)


@dataclass(frozen=True)
class CustomerCard:
    customer: str  # the id, without "customers/"
    display_name: str
    state: str
    identifiers: list[IdentifierView]


def customer_id(value: str) -> str | None:
    """The id in "customers/{id}" or a bare id, when it is one."""
    bare = value.strip().removeprefix("customers/")
    return bare if _CUSTOMER.match(bare) else None


def card(customer: identity_pb2.Customer) -> CustomerCard:
    return CustomerCard(
        customer=customer.name.removeprefix("customers/"),
        display_name=customer.display_name,
        state=STATES.get(customer.state, ""),
        identifiers=[
            IdentifierView(KINDS.get(i.kind, ""), i.value, "verified" if i.verified else "claimed")
            for i in customer.identifiers
        ],
    )
