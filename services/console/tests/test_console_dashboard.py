"""The dashboard in real Chromium against the real stack: the last 24 hours and 30 days per
channel as AgentService.GetTicketMetrics counts them, an escalation by its reason, the charts,
and a question the agent could not answer among the knowledge gaps; no page without a session."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from fte.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.knowledge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_stack.stack import Stack
from playwright.async_api import async_playwright, expect
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


async def day_totals(stack: Stack) -> agent_service_pb2.ChannelMetrics:
    request = agent_service_pb2.GetTicketMetricsRequest()
    request.window.FromTimedelta(timedelta(hours=24))
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as channel:
        reply = await agent_service_pb2_grpc.AgentServiceStub(channel).GetTicketMetrics(request)
    return reply.channels[0]


async def gap_recorded(stack: Stack, marker: str) -> None:
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["kb-reader"]) as channel:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        async with asyncio.timeout(60):
            while True:
                page = await stub.ListKnowledgeGaps(knowledge_service_pb2.ListKnowledgeGapsRequest(page_size=5))
                if any(marker in g.representative.question for g in page.knowledge_gap_groups):
                    return
                await asyncio.sleep(0.5)


async def test_no_dashboard_without_a_session(full_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{full_stack.ports['console']}") as http:
        page = await http.get("/dashboard")
    assert (page.status_code, page.headers["location"]) == (303, "/login")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_the_dashboard_shows_the_windows_metrics_and_the_knowledge_gaps(full_stack: Stack) -> None:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    marker, gap_marker = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    gateway = f"http://127.0.0.1:{full_stack.ports['gateway']}"
    await whatsapp(gateway, new_phone(), f"{marker} I was charged twice, I want a refund now")
    await whatsapp(gateway, new_phone(), f"Is there a Workday connector for team {gap_marker}?")
    refund = await ticket_of(full_stack, marker)
    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        async with asyncio.timeout(60):
            while not refund.escalation_reason:  # stored before the agent's decision
                await asyncio.sleep(0.5)
                refund = (await agent.GetTicket(agent_service_pb2.GetTicketRequest(name=refund.name))).ticket
    assert refund.escalation_reason == common_pb2.ESCALATION_REASON_REFUND
    await gap_recorded(full_stack, gap_marker)

    OUTPUT.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1300, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(base + "/login")
            await page.get_by_label("Username").fill(name)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#signed-in-as")).to_contain_text(name)
            before = await day_totals(full_stack)
            await page.get_by_role("link", name="Dashboard").click()
            after = await day_totals(full_stack)
            await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

            day = page.locator("#window-1")
            await expect(day).to_have_attribute("data-window", "last 24 hours")
            await expect(page.locator("#window-2")).to_have_attribute("data-window", "last 30 days")
            shown = int(await day.locator("tr[data-channel='all channels'] td.tickets").inner_text())
            assert before.tickets <= shown <= after.tickets
            assert shown >= 2
            whatsapp_row = day.locator("tr[data-channel='whatsapp']")
            await expect(whatsapp_row).to_have_count(1)
            await expect(whatsapp_row.locator("td.reasons")).to_contain_text("refund")
            assert int(await whatsapp_row.locator("td.tickets").inner_text()) >= 2
            # Each chart has its bars, one per reason or day, with the figures as text too.
            await expect(day.locator(".chart-reasons rect")).to_have_count(len(after.escalations))
            await expect(day.locator(".chart-sentiment rect")).to_have_count(len(after.sentiment))
            await expect(day.locator(".chart-reasons .legend")).to_contain_text("refund")
            await expect(page.locator("#gaps")).to_contain_text(f"Is there a Workday connector for team {gap_marker}?")
            await page.screenshot(path=str(OUTPUT / "console-dashboard.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()
