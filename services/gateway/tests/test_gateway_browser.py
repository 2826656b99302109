"""The support form in a real headless browser (Debian's Chromium driven by Playwright): fill it,
submit with errors, submit correctly, see the reference, open the status page."""

from __future__ import annotations

from pathlib import Path

import pytest
from fte.agent.v1 import agent_pb2
from fte.events.v1 import message_events_pb2
from fte_gateway.forms import REFERENCE
from fte_gateway.server import GatewayServer
from gateway_helpers import EventLog, FakeAgentService  # type: ignore[import-not-found]
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import async_playwright, expect

pytestmark = pytest.mark.kafka

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(__file__).resolve().parents[3] / "test-output"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_support_form_in_a_browser(gateway: GatewayServer, event_log: EventLog, agent: FakeAgentService) -> None:
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 1200})
            await page.goto(f"{gateway.url}/support")
            await expect(page.get_by_role("heading", name="Contact support")).to_be_visible()

            # The character counter follows the message.
            await page.get_by_label("How can we help?").fill("short")
            await expect(page.locator("#message-count")).to_contain_text("5 / 5000")

            # Submit with errors: the browser shows them and nothing is published.
            before = await event_log.snapshot()
            await page.get_by_label("Name").fill("Ada Lovelace")
            await page.get_by_label("Email").fill("ada@")
            await page.get_by_role("button", name="Send request").click()
            await expect(page.locator("#form-status")).to_contain_text("Please correct the 3 fields")
            await expect(page.locator("#email-error")).to_contain_text("valid email address")
            await expect(page.locator("#subject-error")).to_contain_text("enter a subject")
            await expect(page.locator("#message-error")).to_contain_text("at least 10 characters")
            await expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
            await expect(page.get_by_label("Email")).to_be_focused()
            assert await event_log.since(before) == []

            # Submit correctly.
            await page.get_by_label("Email").fill("ada@example.com")
            await page.get_by_label("Phone").fill("+44 20 7946 0958")
            await page.get_by_label("Subject").fill("Cannot export reports")
            await page.get_by_label("Category").select_option("bug_report")
            await page.get_by_label("High").check()
            await page.get_by_label("How can we help?").fill("The export button does nothing since yesterday.")
            await page.get_by_role("button", name="Send request").click()
            await expect(page.locator("#done")).to_be_visible()
            reference = (await page.locator("#reference").text_content() or "").strip()
            assert REFERENCE.match(reference)
            await page.screenshot(path=str(OUTPUT / "gateway-support-form-submitted.png"), full_page=True)

            records = await event_log.since(before)
            assert len(records) == 1
            msg = records[0].event.message
            assert isinstance(msg, message_events_pb2.MessageReceived)
            assert msg.web_form.ticket_reference == reference
            assert msg.sender.email == "ada@example.com"

            # The agent opened the ticket and answered; the status page shows both.
            name = f"tickets/{reference}"
            agent.add(
                agent_pb2.Ticket(name=name, subject="Cannot export reports", status=agent_pb2.TICKET_STATUS_OPEN),
                [
                    agent_pb2.Message(ticket=name, author=agent_pb2.AUTHOR_CUSTOMER, text=msg.text_body),
                    agent_pb2.Message(
                        ticket=name,
                        author=agent_pb2.AUTHOR_AGENT,
                        text="Thanks! Please try the CSV export while we fix it.",
                        create_time=Timestamp(seconds=1_800_000_000),
                    ),
                ],
            )
            await page.get_by_role("link", name="See the status of your request").click()
            await expect(page.locator("#ticket-status")).to_have_text("Open")
            await expect(page.locator(".conversation")).to_contain_text("Please try the CSV export")
            await page.screenshot(path=str(OUTPUT / "gateway-support-status.png"), full_page=True)
        finally:
            await browser.close()
    assert (OUTPUT / "gateway-support-status.png").stat().st_size > 0
