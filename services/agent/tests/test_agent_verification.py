"""One customer across channels, proven by the customer, end to end through the real webhooks:
a claim gets a one-time code over the claimed identifier's own channel, the code comes back on
the claimant's channel, and only then do the two customers become one (with an audit record).
Until then nothing of the other customer reaches the claimant."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from agent_helpers import eventually, phone_for  # type: ignore[import-not-found]
from e2e_client import E2E  # type: ignore[import-not-found]
from fte.agent.v1 import agent_pb2, agent_service_pb2
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2
from fte_stack.stack import Stack

pytestmark = pytest.mark.kafka

WA, MAIL, WEB = common_pb2.CHANNEL_WHATSAPP, common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_WEB_FORM
K = identity_pb2


@pytest.fixture
async def e2e(full_stack: Stack) -> Any:
    client = E2E(full_stack)
    yield client
    await client.close()


def _person() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"p.{tag}@customer.example", str(phone_for(tag))


async def _customer_of(e2e: E2E, kind: int, value: str) -> identity_pb2.Customer:
    found = await e2e.identity.ListCustomers(
        identity_service_pb2.ListCustomersRequest(
            identifier=identity_service_pb2.IdentifierInput(kind=kind, value=value)  # type: ignore[arg-type]
        )
    )
    [customer] = found.customers
    assert isinstance(customer, identity_pb2.Customer)
    return customer


async def _history_channels(e2e: E2E, customer: str) -> set[int]:
    history = await e2e.agent.GetCustomerHistory(
        agent_service_pb2.GetCustomerHistoryRequest(customer=customer, page_size=100)
    )
    return {m.channel for m in history.messages}


async def test_whatsapp_mention_of_an_email_gets_a_code_by_email_sent_back_on_whatsapp(e2e: E2E) -> None:
    address, phone = _person()
    first = f"How do I export a project to Excel? ({uuid.uuid4().hex[:4]})"
    await e2e.email(address, "Export", first)
    await e2e.reply_after(first, MAIL)
    ask = f"How do I invite teammates to my workspace? My email with you is {address} ({uuid.uuid4().hex[:4]})"
    await e2e.whatsapp(phone, ask)
    _, reply = await e2e.reply_after(ask, WA)
    assert "invite-teammates" in reply  # the question is answered as usual
    assert "one-time code" in reply
    assert address not in reply  # the offer names the address masked
    # Nothing crossed yet: the WhatsApp customer is not the email customer.
    by_mail = await _customer_of(e2e, K.IDENTIFIER_KIND_EMAIL, address)
    by_phone = await _customer_of(e2e, K.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone}")
    assert by_mail.name != by_phone.name
    [claim] = [i for i in by_phone.identifiers if i.kind == K.IDENTIFIER_KIND_EMAIL]
    assert (claim.verified, claim.contested, claim.evidence) == (False, True, K.EVIDENCE_CLAIMED)
    assert claim.HasField("verification_expire_time")

    code = await e2e.new_code(address, MAIL)
    await e2e.whatsapp(phone, code)
    _, done = await e2e.reply_after(code, WA)
    assert "conversations are now connected" in done
    merged = await _customer_of(e2e, K.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone}")
    assert merged.name == by_mail.name  # the claimant was merged into the address's owner
    assert {(i.kind, i.verified) for i in merged.identifiers} >= {
        (K.IDENTIFIER_KIND_EMAIL, True),
        (K.IDENTIFIER_KIND_WHATSAPP, True),
        (K.IDENTIFIER_KIND_PHONE, True),
    }

    async def crossed() -> bool:
        return await _history_channels(e2e, merged.name) == {MAIL, WA}

    await eventually(crossed, timeout=30, what="one history across email and WhatsApp")
    # The same code again is refused: it worked once.
    await e2e.whatsapp(phone, f"code {code}")
    _, again = await e2e.reply_after(f"code {code}", WA)
    assert "no code waiting" in again

    # Erasing the merged customer erases what both channels held.
    await e2e.identity.EraseCustomer(identity_service_pb2.EraseCustomerRequest(name=merged.name, reason="GDPR-16"))

    async def erased() -> bool:
        history = await e2e.agent.GetCustomerHistory(
            agent_service_pb2.GetCustomerHistoryRequest(customer=merged.name, page_size=100)
        )
        texts = {m.text for m in history.messages if m.author == agent_pb2.AUTHOR_CUSTOMER}
        return bool(texts) and first not in texts and ask not in texts

    await eventually(erased, timeout=30, what="the merged customer's messages erased on both channels")
    gone = await e2e.identity.GetCustomer(identity_service_pb2.GetCustomerRequest(name=by_phone.name))
    assert gone.customer.state == identity_pb2.Customer.STATE_ERASED


async def test_form_phone_gets_a_code_on_whatsapp_typed_back_on_the_status_page(e2e: E2E) -> None:
    address, phone = _person()
    first = f"which browsers are supported? ({uuid.uuid4().hex[:4]})"
    await e2e.whatsapp(phone, first)
    await e2e.reply_after(first, WA)
    owner = await _customer_of(e2e, K.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone}")
    reference = await e2e.form(address, "How do I reset my password please?", phone=phone)
    page = await e2e.status_messages(reference, 2)
    assert "one-time code" in page[1]["text"]
    # The claimant sees its own ticket only: nothing of the WhatsApp conversation.
    assert all(first not in m["text"] for m in page)
    code = await e2e.new_code(f"whatsapp:{phone}", WA)
    await e2e.status_reply(reference, code)
    page = await e2e.status_messages(reference, 4)
    assert "conversations are now connected" in page[3]["text"]

    async def moved() -> bool:
        ticket = await e2e.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=f"tickets/{reference}"))
        return bool(ticket.ticket.customer == owner.name)

    await eventually(moved, timeout=30, what="the form's ticket under the WhatsApp customer")
    assert await _history_channels(e2e, owner.name) == {WA, WEB}


async def test_a_hostile_claim_gets_nothing_and_its_guesses_are_refused(e2e: E2E) -> None:
    victim, _ = _person()
    secret = f"My invoice number is INV-{uuid.uuid4().hex[:6]}. How do I change my billing plan?"
    await e2e.email(victim, "Billing", secret)
    await e2e.reply_after(secret, MAIL)
    victim_customer = await _customer_of(e2e, K.IDENTIFIER_KIND_EMAIL, victim)
    # A spoofed From (failed DMARC) is a stranger, not the victim.
    spoof = f"What did I ask you last time? ({uuid.uuid4().hex[:4]})"
    await e2e.email(victim, "Again", spoof, authenticated=False)
    spoof_ticket, spoof_reply = await e2e.reply_after(spoof, MAIL)
    assert spoof_ticket.customer != victim_customer.name
    assert "INV-" not in spoof_reply
    # A WhatsApp stranger claims the victim's address and guesses codes.
    _, attacker = _person()
    claim = f"I wrote to you from {victim}, what is my invoice number? ({uuid.uuid4().hex[:4]})"
    await e2e.whatsapp(attacker, claim)
    _, reply = await e2e.reply_after(claim, WA)
    assert "INV-" not in reply
    real = await e2e.new_code(victim, MAIL)
    guesses = [f"{(int(real) + n) % 1_000_000:06d}" for n in range(1, 8)]
    answers = []
    for guess in guesses:
        await e2e.whatsapp(attacker, guess)
        answers.append((await e2e.reply_after(guess, WA))[1])
    assert "4 more times" in answers[0]
    assert all("no longer works" in a for a in answers[4:])  # beyond the limit: refused, unchecked
    # Even the right code no longer works.
    await e2e.whatsapp(attacker, real)
    _, late = await e2e.reply_after(real, WA)
    assert "connected" not in late
    still = await _customer_of(e2e, K.IDENTIFIER_KIND_EMAIL, victim)
    assert still.name == victim_customer.name
    assert await _history_channels(e2e, victim_customer.name) == {MAIL}


async def test_an_address_nobody_holds_gets_no_code(e2e: E2E) -> None:
    """Naming a colleague's address is not a claim to prove: no code mails a third party."""
    _, phone = _person()
    colleague, _ = _person()
    ask = f"How do I invite teammates? My colleague {colleague} needs access ({uuid.uuid4().hex[:4]})"
    await e2e.whatsapp(phone, ask)
    _, reply = await e2e.reply_after(ask, WA)
    assert "invite-teammates" in reply
    assert "one-time code" not in reply
    # The offer is made before the reply goes out, so by now a code would have been delivered.
    assert await e2e.codes_sent_to(colleague, MAIL) == []


async def test_an_expired_code_is_refused_and_merges_nothing(full_stack: Stack, e2e: E2E) -> None:
    address, phone = _person()
    first = f"Which browsers are supported? ({uuid.uuid4().hex[:4]})"
    await e2e.email(address, "Browsers", first)
    await e2e.reply_after(first, MAIL)
    owner = await _customer_of(e2e, K.IDENTIFIER_KIND_EMAIL, address)
    ask = f"How do I reset my password? I wrote to you from {address} ({uuid.uuid4().hex[:4]})"
    await e2e.whatsapp(phone, ask)
    _, reply = await e2e.reply_after(ask, WA)
    assert "one-time code" in reply
    code = await e2e.new_code(address, MAIL)
    # Time passes: the code's ten minutes are over.
    conn = await asyncpg.connect(full_stack.postgres.dsn())
    try:
        expired = await conn.execute(
            "UPDATE identity.verification_codes SET expire_time = now() - interval '1 second'"
            " WHERE used_time IS NULL AND expire_time > now()"
            " AND identifier_id IN (SELECT id FROM identity.identifiers WHERE kind = $1 AND value = $2"
            " AND NOT verified)",
            K.IDENTIFIER_KIND_EMAIL,
            address,
        )
    finally:
        await conn.close()
    assert expired == "UPDATE 1"
    await e2e.whatsapp(phone, code)
    _, answer = await e2e.reply_after(code, WA)
    assert "expired" in answer
    assert "connected" not in answer
    claimant = await _customer_of(e2e, K.IDENTIFIER_KIND_WHATSAPP, f"whatsapp:{phone}")
    assert claimant.name != owner.name
    assert await _history_channels(e2e, owner.name) == {MAIL}
