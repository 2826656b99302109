"""The customer card's identifiers: evidence level, what proved it, contested claims and codes
waiting (pure logic; the stack tests show the card on the page)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jinja2
from fte.identity.v1 import identity_pb2
from fte_console import customers

TEMPLATES = Path(customers.__file__).parent / "templates"
ID = identity_pb2


def test_each_identifier_shows_its_proof_a_contest_and_a_code_waiting() -> None:
    customer = ID.Customer(name="customers/c1", display_name="Rosa", state=ID.Customer.STATE_ACTIVE)
    customer.identifiers.add(kind=ID.IDENTIFIER_KIND_WHATSAPP, value="whatsapp:+14155550101", verified=True,
                             evidence=ID.EVIDENCE_CHANNEL)  # fmt: skip
    customer.identifiers.add(kind=ID.IDENTIFIER_KIND_EMAIL, value="rosa@example.com", verified=True,
                             evidence=ID.EVIDENCE_CODE)  # fmt: skip
    claim = customer.identifiers.add(kind=ID.IDENTIFIER_KIND_PHONE, value="+14155550199", verified=False,
                                     evidence=ID.EVIDENCE_CLAIMED, contested=True)  # fmt: skip
    claim.verification_expire_time.FromDatetime(datetime(2026, 12, 2, 3, 15, tzinfo=UTC))
    card = customers.card(customer)
    assert [(i.kind, i.evidence, i.proof, i.contested, i.pending_until) for i in card.identifiers] == [
        ("whatsapp", "verified", "channel", False, ""),
        ("email", "verified", "code", False, ""),
        ("phone", "claimed", "", True, "2026-12-02 03:15 UTC"),
    ]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    html = env.get_template("customer_card.html").render(card=card)
    assert '+14155550101 <span class="badge evidence-verified">verified</span> <span class="proof">by channel' in html
    assert '<span class="proof">by code</span>' in html
    assert '+14155550199 <span class="badge evidence-claimed">claimed</span> <span class="badge contested">' in html
    assert "code sent, valid until 2026-12-02 03:15 UTC" in html
