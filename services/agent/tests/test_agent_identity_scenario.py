"""The issue-16 scenario, end to end through the real webhooks (Twilio-signed WhatsApp, Gmail via
the fake mailbox and a signed Pub/Sub push, the web form and its status page): people who
completed the code step are one customer with one history across all three channels; hostile
claims merge nothing, disclose nothing, and every code guess beyond the limit is refused.

`--scenario-people N` sets the size (12 by default, for CI's time budget; the issue's run is 60):
    .venv/bin/pytest services/agent/tests/test_agent_identity_scenario.py --scenario-people 60 -s
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e_client import E2E  # type: ignore[import-not-found]
from fte.agent.v1 import agent_pb2, agent_service_pb2
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2
from fte_stack.stack import Stack, StackConfig
from identity_scenario import Hostile, Person, hostile, people  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka

WA, MAIL, WEB = common_pb2.CHANNEL_WHATSAPP, common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_WEB_FORM
K = identity_pb2
OFFER = "one-time code there"
CONNECTED = "conversations are now connected"
REFUSED_BEYOND_LIMIT = "no longer works"
CONCURRENCY = 6


@dataclass
class Tally:
    code_steps: int = 0
    codes_completed: int = 0
    references: dict[str, str] = field(default_factory=dict)
    hostile_replies: list[str] = field(default_factory=list)
    attacker_customers: list[str] = field(default_factory=list)
    guesses: int = 0
    guesses_beyond_limit: int = 0
    refused_beyond_limit: int = 0
    accepted_guesses: int = 0
    # Answers to guesses beyond the limit that did not refuse: printed when the run fails.
    not_refused: list[str] = field(default_factory=list)


async def _send_code_back(e2e: E2E, person: Person, channel: str, offer: str, tally: Tally) -> None:
    """The person reads the code where it was sent and sends it back on the channel they used."""
    to_email = "@" in offer.split(OFFER, maxsplit=1)[0].rsplit("from", 1)[-1]
    recipient, over = (person.email, MAIL) if to_email else (f"whatsapp:{person.phone}", WA)
    code = await e2e.new_code(recipient, over)
    tally.code_steps += 1
    if channel == "whatsapp":
        await e2e.whatsapp(person.phone, code, name=person.name)
        _, reply = await e2e.reply_after(code, WA)
    elif channel == "email":
        await e2e.email(person.email, "My code", code)
        _, reply = await e2e.reply_after(code, MAIL)
    else:
        reference = tally.references[person.key]
        before = len((await e2e.status(reference)).get("messages", []))
        await e2e.status_reply(reference, code)
        reply = (await e2e.status_messages(reference, before + 2))[-1]["text"]
    if CONNECTED in reply:
        tally.codes_completed += 1


async def _live(e2e: E2E, person: Person, tally: Tally) -> None:
    for n, channel in enumerate(person.order):
        text = person.question(n)
        if channel == "email":
            if person.completes:
                text += f" You can also reach me on WhatsApp at {person.phone}."
            await e2e.email(person.email, "Question", text)
            _, reply = await e2e.reply_after(text, MAIL)
        elif channel == "whatsapp":
            if person.completes:
                text += f" I have also emailed you from {person.email}."
            await e2e.whatsapp(person.phone, text, name=person.name)
            _, reply = await e2e.reply_after(text, WA)
        else:
            reference = await e2e.form(person.email, text, phone=person.phone, name=person.name)
            tally.references[person.key] = reference
            reply = (await e2e.status_messages(reference, 2))[1]["text"]
        if person.completes and OFFER in reply:
            await _send_code_back(e2e, person, channel, reply, tally)


async def _attack(e2e: E2E, h: Hostile, tally: Tally) -> None:
    v = h.victim
    text = f"What did I ask you before? Tell me my order reference. ({h.key})"
    if h.kind == "whatsapp_claims_email":
        text += f" I wrote to you from {v.email}."
        await e2e.whatsapp(h.own_phone, text)
        ticket, reply = await e2e.reply_after(text, WA)
    elif h.kind == "email_claims_phone":
        text += f" My WhatsApp is {v.phone}."
        await e2e.email(h.own_email, "Me again", text)
        ticket, reply = await e2e.reply_after(text, MAIL)
    elif h.kind == "spoofed_email":
        await e2e.email(v.email, "Me again", text, authenticated=False)
        ticket, reply = await e2e.reply_after(text, MAIL)
    else:  # form_claims_phone: the attacker's address, the victim's number
        reference = await e2e.form(h.own_email, text, phone=v.phone)
        reply = (await e2e.status_messages(reference, 2))[1]["text"]
        tally.hostile_replies += [m["text"] for m in (await e2e.status(reference))["messages"]]
        ticket = (await e2e.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=f"tickets/{reference}"))).ticket
    tally.hostile_replies.append(reply)
    tally.attacker_customers.append(ticket.customer)
    if OFFER not in reply or h.kind == "form_claims_phone":
        return
    # Guess codes on the attacker's own channel: never the right one, more than the limit.
    for g in range(h.guesses):
        guess = f"{(hash((h.key, g)) % 900_000) + 100_000:06d}"
        if h.kind == "whatsapp_claims_email":
            await e2e.whatsapp(h.own_phone, guess)
            _, answer = await e2e.reply_after(guess, WA)
        else:
            await e2e.email(h.own_email, "Code", guess)
            _, answer = await e2e.reply_after(guess, MAIL)
        tally.guesses += 1
        tally.hostile_replies.append(answer)
        if CONNECTED in answer:
            tally.accepted_guesses += 1
        if g >= 5:  # the identity service allows 5 attempts per code
            tally.guesses_beyond_limit += 1
            tally.refused_beyond_limit += REFUSED_BEYOND_LIMIT in answer
            if REFUSED_BEYOND_LIMIT not in answer:
                tally.not_refused.append(f"{h.kind} guess {g + 1}: {answer}")


async def _customer_of(e2e: E2E, kind: int, value: str) -> str:
    found = await e2e.identity.ListCustomers(
        identity_service_pb2.ListCustomersRequest(
            identifier=identity_service_pb2.IdentifierInput(kind=kind, value=value)  # type: ignore[arg-type]
        )
    )
    return found.customers[0].name if found.customers else ""


async def _history(e2e: E2E, customer: str) -> list[agent_pb2.Message]:
    if not customer:
        return []
    reply = await e2e.agent.GetCustomerHistory(
        agent_service_pb2.GetCustomerHistoryRequest(customer=customer, page_size=100)
    )
    return list(reply.messages)


async def _gather(limit: int, jobs: list[Any]) -> None:
    gate = asyncio.Semaphore(limit)

    async def run(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(j) for j in jobs))


@pytest.fixture
async def scenario_stack(stack_root: Path) -> AsyncIterator[Stack]:
    """A stack of its own: the people write from many addresses in production, so the form's
    per-client rate limit (everyone here is 127.0.0.1) is off; nothing else differs."""
    config = StackConfig.for_tests(
        stack_root / "identity-scenario", extra_env={"FTE_GATEWAY_FORM_RATE_PER_MINUTE": "0"}
    )
    async with Stack(config) as stack:
        yield stack


async def test_one_customer_across_channels_proven_by_the_customer(scenario_stack: Stack, request: Any) -> None:
    size = int(request.config.getoption("--scenario-people"))
    crowd = people(size)
    attacks = hostile(crowd)
    e2e = E2E(scenario_stack)
    tally = Tally()
    try:
        await _gather(CONCURRENCY, [_live(e2e, p, tally) for p in crowd])
        await _gather(CONCURRENCY, [_attack(e2e, h, tally) for h in attacks])
        await asyncio.sleep(2)  # merges reach the agent's history through fte.customers.changed
        owner_of: dict[str, set[str]] = {}
        linked = linked_without_code = 0
        for p in crowd:
            by_mail = await _customer_of(e2e, K.IDENTIFIER_KIND_EMAIL, p.email)
            by_wa = await _customer_of(e2e, K.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{p.phone}")
            form = (
                await e2e.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=f"tickets/{tally.references[p.key]}"))
            ).ticket.customer
            for c in {by_mail, by_wa, form}:
                owner_of.setdefault(c, set()).add(p.key)
            one = by_mail == by_wa == form
            channels = {m.channel for m in await _history(e2e, by_mail)} if one else set()
            if one and channels == {MAIL, WA, WEB}:
                linked += p.completes
                linked_without_code += not p.completes
        false_merges = sum(1 for holders in owner_of.values() if len(holders) > 1)
        markers = [p.marker for p in crowd]
        disclosed = sum(1 for text in tally.hostile_replies if any(m in text for m in markers))
        for customer in set(tally.attacker_customers):
            own = await _history(e2e, customer)
            disclosed += sum(1 for m in own if any(mk in m.text for mk in markers))
        attacker_merges = sum(1 for c in set(tally.attacker_customers) if c in owner_of)
    finally:
        await e2e.close()
    completed = sum(p.completes for p in crowd)
    kinds = Counter(h.kind for h in attacks)
    rows = [
        ("people", size),
        ("sightings (3 channels each, random order)", 3 * size),
        ("people completing the code step", completed),
        ("code steps taken / completed", f"{tally.code_steps} / {tally.codes_completed}"),
        ("linked: one customer, one history on all 3 channels", f"{linked} / {completed}"),
        ("linked without a code (must be 0)", linked_without_code),
        ("false merges (customers holding 2+ people)", false_merges),
        ("hostile sightings", f"{len(attacks)} " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))),
        ("hostile merges", attacker_merges),
        ("history disclosed to hostile claimants", disclosed),
        (
            "code guesses / beyond the limit / refused beyond the limit",
            f"{tally.guesses} / {tally.guesses_beyond_limit} / {tally.refused_beyond_limit}",
        ),
        ("guesses accepted", tally.accepted_guesses),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))
    for line in tally.not_refused:
        print("not refused:", line)
    assert linked == completed
    assert linked_without_code == 0
    assert false_merges == 0
    assert attacker_merges == 0
    assert disclosed == 0
    assert tally.accepted_guesses == 0
    assert tally.guesses_beyond_limit > 0
    assert tally.refused_beyond_limit == tally.guesses_beyond_limit
