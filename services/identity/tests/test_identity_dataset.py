"""The labeled identity set: every proven sighting (authenticated email, WhatsApp) resolves to its
person's one customer, and no two people share a customer (no false merges). Web-form sightings
prove nothing: each is a claimant customer of its own, never someone else's."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2
from identity_helpers import StartIdentity, ident, resolve_request  # type: ignore[import-not-found]

DATA = Path(__file__).parent / "data" / "identity_sightings.jsonl"


async def test_labeled_sightings_resolve_to_one_customer_per_person(start_identity: StartIdentity) -> None:
    identity = await start_identity(default_region="US")
    sightings = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    people = {s["person"] for s in sightings}
    assert len(sightings) >= 150
    assert len(people) >= 50
    customer_of_person: dict[str, set[str]] = defaultdict(set)
    people_of_customer: dict[str, set[str]] = defaultdict(set)
    created = 0
    for s in sightings:
        request = resolve_request(
            common_pb2.Channel.Value(f"CHANNEL_{s['channel']}"),
            *(ident(identity_pb2.IdentifierKind.Value(f"IDENTIFIER_KIND_{k}"), v) for k, v in s["identifiers"]),
            name=s["display_name"],
        )
        response = await identity.stub.ResolveCustomer(request)
        if s["channel"] == "WEB_FORM":
            # Changed with the evidence levels: a form used to be matched by its typed email.
            assert response.created
            assert not any(i.verified for i in response.customer.identifiers)
            people_of_customer[response.customer.name].add(s["person"])
            continue
        created += response.created
        customer_of_person[s["person"]].add(response.customer.name)
        people_of_customer[response.customer.name].add(s["person"])
    split = {p: c for p, c in customer_of_person.items() if len(c) > 1}
    false_merges = {c: p for c, p in people_of_customer.items() if len(p) > 1}
    proven = [s for s in sightings if s["channel"] != "WEB_FORM"]
    assert len(proven) >= 100
    correct = sum(
        1
        for s in proven
        if len(customer_of_person[s["person"]]) == 1
        and len(people_of_customer[next(iter(customer_of_person[s["person"]]))]) == 1
    )
    assert split == {}, f"people split across customers: {sorted(split)}"
    assert false_merges == {}, f"customers holding several people: {false_merges}"
    assert correct == len(proven)
    assert created == len({s["person"] for s in proven})
