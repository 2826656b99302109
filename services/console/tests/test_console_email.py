"""An escalated email worked in a browser from the live queue to a threaded reply in the customer's
mailbox: a real MIME message into the (fake) Gmail mailbox, pushed to the gateway's Pub/Sub
webhook as Gmail would, through the real agent, notifier and Envoy."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte_runtime.grpc_client import connect
from fte_stack.fakes.gmail import build_email
from fte_stack.stack import Stack
from playwright.async_api import Page, async_playwright, expect
from test_console_stack import CHROMIUM, FLAGS, OUTPUT, PASSWORD, add_user  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka
MAILBOX = "support@example.com"


async def deliver(stack: Stack, raw: bytes) -> dict[str, Any]:
    """Mail arrives in the support mailbox; the stack announces it to the gateway as Pub/Sub does."""
    assert stack.providers is not None
    async with httpx.AsyncClient(base_url=stack.providers.gmail.url, timeout=10) as fake:
        resp = await fake.post("/_fake/inbox", content=raw)
    assert resp.status_code == 200, resp.text
    stored: dict[str, Any] = resp.json()
    return stored


def sent_to(stack: Stack, address: str) -> list[tuple[str, EmailMessage]]:
    """(threadId, message) of every mail the fake Gmail API accepted for `address`."""
    assert stack.providers is not None
    out = []
    for m in stack.providers.gmail.sent():
        parsed = email.message_from_bytes(m.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        if address in str(parsed["To"]):
            out.append((m.thread_id, parsed))
    return out


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n").removesuffix("\n")


async def email_tickets(stack: Stack, customer: str) -> list[agent_pb2.Ticket]:
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as channel:
        history = await agent_service_pb2_grpc.AgentServiceStub(channel).GetCustomerHistory(
            agent_service_pb2.GetCustomerHistoryRequest(customer=customer, page_size=50)
        )
    return [t for t in history.tickets if t.channel == common_pb2.CHANNEL_EMAIL]


async def sign_in(page: Page, base: str, name: str) -> None:
    await page.goto(base + "/login")
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signed-in-as")).to_contain_text(name)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_an_escalated_email_is_answered_in_its_thread_from_the_browser(full_stack: Stack) -> None:
    name = f"eva-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    marker = uuid.uuid4().hex[:8]
    sender = f"rosa.{marker}@customer.example"
    first_id = f"<{uuid.uuid4().hex}@mail.customer.example>"
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
            await sign_in(page, base, name)
            await expect(page.locator("#live-status")).to_have_text("live", timeout=30_000)

            raw = build_email(
                sender=f"Rosa Diaz <{sender}>",
                to=MAILBOX,
                subject=f"Password trouble {marker}",
                text="Let me talk to a real person please. How do I reset my password?\n\nRosa",
                message_id=first_id,
            )
            inbox = await deliver(full_stack, raw)
            # The escalation appears in the open queue, without a reload.
            row = page.locator("#queue tr", has_text=marker)
            await expect(row).to_have_count(1, timeout=60_000)
            await expect(row.locator("td").nth(4)).to_have_text("email")
            ticket = await row.get_attribute("data-ticket")
            assert ticket
            await row.get_by_role("link", name=ticket).click()
            await expect(page.locator("#conversation")).to_contain_text("How do I reset my password?")

            await page.locator("#assign-to-me").click()
            await expect(page.locator("#ticket-assignee")).to_have_text(name)
            box = page.locator("#reply-text")
            await page.locator("#suggest-reply").click()
            await expect(box).not_to_have_value("", timeout=30_000)
            draft = await box.input_value()
            assert "password" in draft.lower()  # drafted from the password article
            edited = draft.replace("Hi,", "Hi Rosa,", 1) + f"\n\nI have also signed you out everywhere ({marker})."
            await box.fill(edited)
            await page.screenshot(path=str(OUTPUT / "console-email-suggested-reply.png"), full_page=True)
            await page.locator("#send-reply").click()
            await expect(page.locator("#conversation")).to_contain_text(f"signed you out everywhere ({marker})")
            await page.screenshot(path=str(OUTPUT / "console-email-replied.png"), full_page=True)

            # Exactly the edited text reached the (fake) Gmail API, as a reply in the customer's thread.
            async with asyncio.timeout(30):
                while True:
                    mine = [(t, m) for t, m in sent_to(full_stack, sender) if marker in text_of(m)]
                    if mine:
                        break
                    await asyncio.sleep(0.2)
            assert len(mine) == 1
            thread, reply = mine[0]
            assert text_of(reply) == edited
            assert thread == inbox["threadId"]
            assert reply["In-Reply-To"] == first_id
            assert first_id in str(reply["References"]).split()
            assert str(reply["Subject"]) == f"Re: Password trouble {marker}"

            await page.locator("#resolve-form input[name=note]").fill("answered by email")
            await page.locator("#resolve").click()
            await expect(page.locator("#ticket-status")).to_have_text("resolved")
            await expect(page.locator("#reply-form")).to_have_count(0)
            assert errors == []
        finally:
            await browser.close()

    # The customer writes again, answering the reply in the same thread: a new ticket opens.
    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        found = await agent_service_pb2_grpc.AgentServiceStub(channel).GetTicket(
            agent_service_pb2.GetTicketRequest(name=f"tickets/{ticket}")
        )
    assert found.ticket.status == agent_pb2.TICKET_STATUS_RESOLVED
    assert found.ticket.assignee == name
    second = build_email(
        sender=f"Rosa Diaz <{sender}>",
        to=MAILBOX,
        subject=f"Re: Password trouble {marker}",
        text="Thanks! One more thing: can I export a project to Excel?",
        in_reply_to=str(reply["Message-ID"]),
        references=f"{first_id} {reply['Message-ID']}",
    )
    await deliver(full_stack, second)
    async with asyncio.timeout(60):
        while True:
            tickets = await email_tickets(full_stack, found.ticket.customer)
            if len(tickets) >= 2:
                break
            await asyncio.sleep(0.5)
    assert {t.name for t in tickets} >= {f"tickets/{ticket}"}
    newer = [t for t in tickets if t.name != f"tickets/{ticket}"]
    assert len(newer) == 1
    assert newer[0].conversation == found.ticket.conversation  # the same conversation goes on
