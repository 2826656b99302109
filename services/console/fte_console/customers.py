"""The customer card and page: identifiers with their evidence level, from IdentityService; the
history from AgentService. Merging and erasing are for admins (the routes check the role)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC

from fte.identity.v1 import identity_pb2
from fte_runtime.enums import value_names

KINDS = value_names(identity_pb2.IdentifierKind)
STATES = value_names(identity_pb2.Customer.State)
PROOFS = value_names(identity_pb2.Evidence)
_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
MAX_REASON = 500


@dataclass(frozen=True)
class IdentifierView:
    kind: str
    value: str
    evidence: str  # "verified" (proven control) or "claimed" (typed or mentioned)
    proof: str = ""  # what proved it: "channel", "code" or "staff"; "" for a claim
    # A claim on what another customer holds verified: nothing of theirs is shown to this one.
    contested: bool = False
    pending_until: str = ""  # a one-time code is out for it, valid until then (UTC)


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
        identifiers=[_identifier(i) for i in customer.identifiers],
    )


def _identifier(i: identity_pb2.Identifier) -> IdentifierView:
    proof = PROOFS.get(i.evidence, "")
    pending = (
        i.verification_expire_time.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M UTC")
        if i.HasField("verification_expire_time")
        else ""
    )
    return IdentifierView(
        kind=KINDS.get(i.kind, ""),
        value=i.value,
        evidence="verified" if i.verified else "claimed",
        proof=proof if i.verified and proof != "claimed" else "",
        contested=i.contested,
        pending_until=pending,
    )
