"""Live delivery status on the ticket page: a staff reply's badge moves from sent to delivered (and
another's to failed) when the (fake) Twilio's signed status callback reaches the gateway, without a
reload; the agent stores the same status. Every step through the real gateway, notifier, agent,
Kafka and Envoy."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte_console.delivery import DeliveryFeed
from fte_runtime.grpc_client import connect
from fte_stack.stack import Stack
from playwright.async_api import Page, async_playwright, expect
from test_console_stack import (  # type: ignore[import-not-found]
    CHROMIUM,
    FLAGS,
    OUTPUT,
    PASSWORD,
    add_user,
    new_phone,
    ticket_of,
    whatsapp,
)

pytestmark = pytest.mark.kafka


async def test_a_status_only_moves_forward_and_a_late_page_gets_what_came_before() -> None:
    feed = DeliveryFeed(remembered=2)
    sent, delivered, failed = (
        common_pb2.DELIVERY_STATUS_SENT,
        common_pb2.DELIVERY_STATUS_DELIVERED,
        common_pb2.DELIVERY_STATUS_FAILED,
    )
    assert feed.apply("t1", "deliveries/a", delivered)
    assert not feed.apply("t1", "deliveries/a", sent)  # a late "sent" never moves it back
    assert feed.apply("t1", "deliveries/b", failed)
    assert feed.known("t1") == {"deliveries/a": delivered, "deliveries/b": failed}
    feed.apply("t2", "deliveries/c", sent)
    feed.apply("t3", "deliveries/d", sent)
    assert feed.known("t1") == {}  # the oldest ticket is forgotten first

    feed.ready.set()

    async def signed_in() -> bool:
        return True

    stream = feed.stream("t3", signed_in, heartbeat=5)
    assert await anext(stream) == "retry: 3000\n\n"
    assert await anext(stream) == "event: ready\ndata: {}\n\n"
    # Subscribed after the event: it comes first, then what follows, for this ticket only.
    assert await anext(stream) == 'event: delivery\ndata: {"delivery":"deliveries/d","status":"sent"}\n\n'
    feed.apply("t2", "deliveries/c", delivered)
    feed.apply("t3", "deliveries/d", delivered)
    assert await anext(stream) == 'event: delivery\ndata: {"delivery":"deliveries/d","status":"delivered"}\n\n'
    feed.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def stored_status(stack: Stack, ticket: str, text: str) -> int:
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as channel:
        listed = await agent_service_pb2_grpc.AgentServiceStub(channel).ListMessages(
            agent_service_pb2.ListMessagesRequest(ticket=f"tickets/{ticket}", page_size=100)
        )
    return next(
        int(m.delivery_status) for m in listed.messages if m.author == agent_pb2.AUTHOR_HUMAN and m.text == text
    )


async def twilio_sid(stack: Stack, phone: str, text: str) -> str:
    """The Twilio message id of the reply, once the notifier handed it over."""
    assert stack.providers is not None
    async with asyncio.timeout(30):
        while True:
            for m in stack.providers.twilio.messages():
                if m.to == f"whatsapp:{phone}" and m.body == text:
                    return m.sid
            await asyncio.sleep(0.2)


async def send_reply(page: Page, text: str) -> None:
    await page.locator("#reply-text").fill(text)
    await page.locator("#send-reply").click()
    await expect(page.locator("#conversation")).to_contain_text(text)
    await expect(page.locator("#live-status")).to_have_text("live", timeout=30_000)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_a_reply_shows_sent_then_delivered_without_a_reload(full_stack: Stack) -> None:
    assert full_stack.providers is not None
    twilio = full_stack.providers.twilio
    name = f"li-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    marker = uuid.uuid4().hex[:8]
    phone = new_phone()
    await whatsapp(f"http://127.0.0.1:{full_stack.ports['gateway']}", phone, f"I want my money back now {marker}")
    ticket = (await ticket_of(full_stack, marker)).name.removeprefix("tickets/")
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get(f"/events/tickets/{ticket}")).status_code == 401
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
            await page.goto(base + "/login")
            await page.get_by_label("Username").fill(name)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.goto(f"{base}/tickets/{ticket}")

            reply = f"Your refund {marker} is on its way."
            await send_reply(page, reply)
            # From here on the page stays the same document: any reload or navigation drops this.
            await page.evaluate("window.sameDocument = true")
            badge = page.locator("#conversation li", has_text=reply).locator(".badge.delivery")
            await expect(badge).to_have_text("sent", timeout=30_000)  # the provider accepted it
            sid = await twilio_sid(full_stack, phone, reply)
            assert await twilio.send_status(sid, "delivered") in (200, 204)
            await expect(badge).to_have_text("delivered", timeout=30_000)
            await expect(badge).to_have_class("badge delivery delivery-delivered")
            assert await page.evaluate("window.sameDocument") is True
            await page.screenshot(path=str(OUTPUT / "console-delivery-status.png"), full_page=True)

            failing = f"One more thing about {marker}: the bank needs two days."
            await send_reply(page, failing)
            await page.evaluate("window.sameDocument = true")
            other = page.locator("#conversation li", has_text=failing).locator(".badge.delivery")
            await expect(other).to_have_text("sent", timeout=30_000)
            assert await twilio.send_status(await twilio_sid(full_stack, phone, failing), "undelivered") in (200, 204)
            await expect(other).to_have_text("failed", timeout=30_000)
            await expect(badge).to_have_text("delivered")
            assert await page.evaluate("window.sameDocument") is True
            assert errors == []  # the script ran under the page's CSP without a violation
        finally:
            await browser.close()
    # The agent stored what the page showed: a reload shows the same.
    async with asyncio.timeout(30):
        while True:
            if await stored_status(full_stack, ticket, reply) == common_pb2.DELIVERY_STATUS_DELIVERED:
                break
            await asyncio.sleep(0.2)
    assert await stored_status(full_stack, ticket, failing) == common_pb2.DELIVERY_STATUS_FAILED
