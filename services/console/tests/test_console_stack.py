"""The staff console as its own process in the stack: sign-in, sessions and CSRF, lockout, then a
WhatsApp refund demand worked from the queue to a sent reply and a resolved ticket, every step
through the real gateway, agent, notifier and Envoy."""

from __future__ import annotations

import asyncio
import html
import re
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_gateway.settings import DEV_TWILIO_AUTH_TOKEN
from fte_runtime.grpc_client import connect
from fte_stack.fakes.twilio import inbound_whatsapp
from fte_stack.stack import Stack
from playwright.async_api import Page, async_playwright, expect

pytestmark = pytest.mark.kafka
PASSWORD = "correct horse battery staple"


async def add_user(stack: Stack, username: str, role: str = "agent") -> None:
    assert stack.info is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fte_console", "users", "add", username, "--role", role,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**stack.children["console"].env},
    )  # fmt: skip
    out, err = await proc.communicate((PASSWORD + "\n").encode())
    assert proc.returncode == 0, err.decode()
    assert f"created {username}" in out.decode()


def request_id_of(page: str, form: str) -> str:
    """The request id rendered into one form of the page."""
    match = re.search(rf'id="{form}">(.*?)</form>', page, re.S)
    assert match, f"no form {form}"
    found = re.search(r'name="request_id" value="([^"]+)"', match.group(1))
    assert found, f"form {form} has no request id"
    return found.group(1)


def csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    form = await client.get("/login")
    return await client.post("/login", data={"csrf_token": csrf(form.text), "username": username, "password": password})


@pytest.fixture
async def console(full_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{full_stack.ports['console']}", timeout=15) as client:
        yield client


async def test_no_page_or_action_without_a_session_and_a_csrf_token(
    full_stack: Stack, console: httpx.AsyncClient
) -> None:
    assert (await console.get("/")).status_code == 303
    assert (await console.get("/tickets/abc123")).headers["location"] == "/login"
    assert (await console.post("/tickets/abc123/reply", data={"text": "hi"})).status_code == 401
    # The sign-in form itself needs its CSRF cookie and token.
    assert (await console.post("/login", data={"username": "x", "password": "y"})).status_code == 403
    name = f"csrf-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    signed = await sign_in(console, name)
    assert signed.status_code == 303
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("fte_console_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    page = await console.get("/")
    assert page.status_code == 200
    assert name in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for token in ("", "not-the-token"):
        refused = await console.post("/logout", data={"csrf_token": token})
        assert refused.status_code == 403
    out = await console.post("/logout", data={"csrf_token": csrf(page.text)})
    assert out.status_code == 303
    console.cookies.clear()
    console.cookies.set("fte_console_session", cookie.split(";")[0].split("=", 1)[1])
    assert (await console.get("/")).status_code == 303  # the signed-out session is gone


async def test_ten_wrong_passwords_lock_the_account(full_stack: Stack, console: httpx.AsyncClient) -> None:
    name = f"lock-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    statuses = [(await sign_in(console, name, "wrong password!")).status_code for _ in range(10)]
    assert statuses == [401] * 9 + [403]
    locked = await sign_in(console, name)  # the right password no longer helps
    assert locked.status_code == 403
    assert "locked" in locked.text
    unknown = await sign_in(console, f"nobody-{uuid.uuid4().hex[:6]}")
    assert unknown.status_code == 401
    assert "Wrong username or password" in unknown.text


def new_phone() -> str:
    """A new valid North American number: its exchange (the 3 digits after 415) is 200-999."""
    return f"+1415{2_000_000 + uuid.uuid4().int % 8_000_000:07d}"


async def whatsapp(gateway: str, phone: str, body: str) -> None:
    params, headers = inbound_whatsapp(f"{gateway}/webhooks/whatsapp", phone, body, auth_token=DEV_TWILIO_AUTH_TOKEN)
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(f"{gateway}/webhooks/whatsapp", data=params, headers=headers)
    assert resp.status_code in (200, 204), resp.text


async def test_an_escalated_refund_is_worked_from_the_queue_to_a_sent_reply(
    full_stack: Stack, console: httpx.AsyncClient
) -> None:
    name = f"rosa-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    assert (await sign_in(console, name)).status_code == 303
    marker = uuid.uuid4().hex[:8]
    text = f"<script>alert('{marker}')</script> I was charged twice, I want my money back now"
    await whatsapp(f"http://127.0.0.1:{full_stack.ports['gateway']}", new_phone(), text)

    ticket = ""
    async with asyncio.timeout(60):
        while not ticket:
            for row in re.findall(r'<tr data-ticket="([^"]+)">', (await console.get("/")).text):
                page = (await console.get(f"/tickets/{row}")).text
                if marker in page:
                    ticket = row
                    break
            else:
                await asyncio.sleep(0.5)
    page = (await console.get(f"/tickets/{ticket}")).text
    assert html.escape(text, quote=True).replace("&#x27;", "&#39;") in page  # shown as text
    assert "<script>alert" not in page
    assert 'id="ticket-status">escalated' in page
    assert 'id="ticket-reason">refund' in page

    row = f'<tr data-ticket="{ticket}">'
    assert row in (await console.get("/?reason=refund&channel=whatsapp&assignee=nobody")).text
    assert row not in (await console.get("/?channel=email")).text
    assert row not in (await console.get("/?status=open")).text
    bad = await console.get("/?channel=fax")
    assert bad.status_code == 400
    assert "channel 'fax' is not one of: email, whatsapp, web_form" in bad.text

    note = f"Checked the payment provider: charged twice. <b>{marker}</b>"
    note_form = {"csrf_token": csrf(page), "request_id": request_id_of(page, "note-form"), "text": note}
    for _ in range(2):  # a resubmitted note form adds once
        assert (await console.post(f"/tickets/{ticket}/notes", data=note_form)).status_code == 303
    empty = await console.post(f"/tickets/{ticket}/notes", data={**note_form, "text": " "})
    assert empty.status_code == 400
    assert "a note is 1 to 5000 characters" in empty.text
    page = (await console.get(f"/tickets/{ticket}")).text
    assert page.count(html.escape(note)) == 1

    assigned = await console.post(f"/tickets/{ticket}/assign", data={"csrf_token": csrf(page)})
    assert assigned.status_code == 303
    page = (await console.get(f"/tickets/{ticket}")).text
    assert f'id="ticket-assignee">{name}' in page
    assert row in (await console.get("/?mine=1")).text
    assert row in (await console.get(f"/?assignee={name}&status=escalated")).text
    assert row not in (await console.get("/?assignee=nobody")).text
    due = re.search(r'id="ticket-due">(\d{4}-\d\d-\d\d \d\d:\d\d UTC) \((in|overdue) ', page)
    assert due, "the ticket page shows when a reply is due"

    reply = "I am sorry about the double charge. I have refunded the second payment today."
    form = {"csrf_token": csrf(page), "request_id": request_id_of(page, "reply-form"), "text": reply}
    assert (await console.post(f"/tickets/{ticket}/reply", data={**form, "csrf_token": "forged"})).status_code == 403
    for _ in range(2):  # a resubmitted form sends once
        assert (await console.post(f"/tickets/{ticket}/reply", data=form)).status_code == 303
    resolved = await console.post(f"/tickets/{ticket}/resolve", data={"csrf_token": csrf(page), "note": "refunded"})
    assert resolved.status_code == 303

    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        found = await agent.GetTicket(agent_service_pb2.GetTicketRequest(name=f"tickets/{ticket}"))
        messages = await agent.ListMessages(agent_service_pb2.ListMessagesRequest(ticket=f"tickets/{ticket}"))
        notes = await agent.ListNotes(agent_service_pb2.ListNotesRequest(ticket=f"tickets/{ticket}"))
        deliveries = await notifier_service_pb2_grpc.NotifierServiceStub(channel).ListDeliveries(
            notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket)
        )
    assert found.ticket.status == agent_pb2.TICKET_STATUS_RESOLVED
    # The page showed the agent's due time (the promise brought into support hours).
    promised = found.ticket.follow_up_by_time.ToDatetime(UTC)
    assert datetime.strptime(due.group(1), "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC) <= promised
    assert not found.ticket.HasField("reply_due_time")  # resolved: nothing is due
    assert found.ticket.assignee == name
    human = [m for m in messages.messages if m.author == agent_pb2.AUTHOR_HUMAN]
    assert [m.text for m in human] == [reply]
    assert human[0].delivery
    assert human[0].actor == name  # the staff member, not only the console's principal
    assert [(n.text, n.actor, n.principal) for n in notes.notes] == [(note, name, "console")]
    assert reply in [d.text_body for d in deliveries.deliveries]
    assert not any(marker in d.text_body for d in deliveries.deliveries)  # the note never left
    page = (await console.get(f"/tickets/{ticket}")).text
    trail = re.findall(r"UTC (\S+): (\w+)</li>", page)
    # Newest first; the resubmitted reply is recorded as submitted, and sent once (above).
    assert trail[:6] == [
        (name, "resolve"),
        (name, "reply"),
        (name, "reply"),
        (name, "assign"),
        (name, "note"),
        (name, "note"),
    ]
    assert 'id="reply-form"' not in page  # a resolved ticket takes no reply


async def ticket_of(stack: Stack, marker: str) -> agent_pb2.Ticket:
    """The WhatsApp ticket whose subject carries `marker`, once the agent has stored it."""
    async with connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        async with asyncio.timeout(60):
            while True:
                listed = await agent.ListTickets(
                    agent_service_pb2.ListTicketsRequest(channel=common_pb2.CHANNEL_WHATSAPP, page_size=100)
                )
                for t in listed.tickets:
                    if marker in t.subject:
                        return t
                await asyncio.sleep(0.5)


async def test_the_customer_card_and_page_and_only_an_admin_merges_or_erases(
    full_stack: Stack, console: httpx.AsyncClient
) -> None:
    staff, admin = f"kim-{uuid.uuid4().hex[:8]}", f"root-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, staff)
    await add_user(full_stack, admin, "admin")
    gateway = f"http://127.0.0.1:{full_stack.ports['gateway']}"
    markers, phones = [uuid.uuid4().hex[:8] for _ in range(2)], [new_phone() for _ in range(2)]
    for marker, phone in zip(markers, phones, strict=True):
        await whatsapp(gateway, phone, f"I was charged twice, I want my money back now {marker}")
    first, second = [await ticket_of(full_stack, m) for m in markers]
    source, target = (t.customer.removeprefix("customers/") for t in (first, second))

    assert (await sign_in(console, staff)).status_code == 303
    page = (await console.get(f"/tickets/{first.name.removeprefix('tickets/')}")).text
    card = re.search(r'<section class="card" id="customer-card">(.*?)</section>', page, re.S)
    assert card, "the ticket page has the customer card"
    # The WhatsApp address arrived on its own channel: proven, so verified.
    assert f'{phones[0]} <span class="badge evidence-verified">verified</span>' in card.group(1)
    assert f'href="/customers/{source}"' in card.group(1)
    customer = await console.get(f"/customers/{source}")
    assert customer.status_code == 200
    assert f'<tr data-ticket="{first.name.removeprefix("tickets/")}">' in customer.text
    assert markers[0] in customer.text  # the history
    assert 'id="merge-form"' not in customer.text  # not offered to an agent...
    form = {"csrf_token": csrf(customer.text), "request_id": str(uuid.uuid4()), "reason": "same person"}
    merge = await console.post(f"/customers/{source}/merge", data={**form, "target": target})
    assert merge.status_code == 403  # ...and refused
    erase = await console.post(f"/customers/{source}/erase", data={**form, "confirm": source})
    assert erase.status_code == 403
    assert (await console.get("/customers/not a customer")).status_code == 404

    console.cookies.clear()
    assert (await sign_in(console, admin)).status_code == 303
    page = (await console.get(f"/customers/{source}")).text
    merge_form = {"csrf_token": csrf(page), "request_id": request_id_of(page, "merge-form")}
    no_reason = await console.post(f"/customers/{source}/merge", data={**merge_form, "target": target, "reason": ""})
    assert no_reason.status_code == 400
    merged = await console.post(
        f"/customers/{source}/merge", data={**merge_form, "target": target, "reason": "same person, two phones"}
    )
    assert merged.status_code == 303
    assert merged.headers["location"] == f"/customers/{target}"
    # The merged-away customer's page leads to the one kept.
    gone = await console.get(f"/customers/{source}")
    assert (gone.status_code, gone.headers["location"]) == (303, f"/customers/{target}")
    page = (await console.get(f"/customers/{target}")).text
    assert 'id="customer-state">active' in page
    assert phones[0] in page  # the identifiers moved with the merge
    assert (admin, "merge") in re.findall(r"UTC (\S+): (\w+)</li>", page)

    erase_form = {"csrf_token": csrf(page), "request_id": request_id_of(page, "erase-form"), "reason": "GDPR request"}
    wrong = await console.post(f"/customers/{target}/erase", data={**erase_form, "confirm": source})
    assert wrong.status_code == 400
    assert "type the customer's id" in wrong.text
    erased = await console.post(f"/customers/{target}/erase", data={**erase_form, "confirm": target})
    assert erased.status_code == 303
    page = (await console.get(f"/customers/{target}")).text
    assert 'id="customer-state">erased' in page
    assert phones[1] not in page
    assert (admin, "erase") in re.findall(r"UTC (\S+): (\w+)</li>", page)


CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
OUTPUT = Path(__file__).resolve().parents[3] / "test-output"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_a_ticket_is_worked_in_a_browser_and_a_planted_script_never_runs(full_stack: Stack) -> None:
    name = f"lin-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    marker = uuid.uuid4().hex[:8]
    text = f'<img src=x onerror="alert(1)"><script>alert(2)</script> {marker} please cancel and refund my order'
    await whatsapp(f"http://127.0.0.1:{full_stack.ports['gateway']}", new_phone(), text)
    OUTPUT.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1200})
            dialogs: list[str] = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            await page.goto(base + "/")
            await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            await page.get_by_label("Username").fill(name)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#signed-in-as")).to_contain_text(name)
            # The message reaches the queue once the agent has escalated it.
            async with asyncio.timeout(60):
                while True:
                    links = await page.locator("#queue a").all_inner_texts()
                    found = ""
                    for ticket in links:
                        async with httpx.AsyncClient(base_url=base, cookies=await _cookies(page)) as http:
                            if marker in (await http.get(f"/tickets/{ticket}")).text:
                                found = ticket
                                break
                    if found:
                        break
                    await asyncio.sleep(0.5)
                    await page.reload()
            await page.get_by_role("link", name=found).click()
            await expect(page.locator("#conversation")).to_contain_text(f"<script>alert(2)</script> {marker}")
            await page.locator("#reply-text").fill(f"Your order {marker} is cancelled and refunded.")
            await page.locator("#send-reply").click()
            await expect(page.locator("#conversation")).to_contain_text(f"Your order {marker} is cancelled")
            await page.screenshot(path=str(OUTPUT / "console-ticket.png"), full_page=True)
            assert dialogs == []  # neither the <img onerror> nor the <script> ran
        finally:
            await browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_a_new_escalation_appears_in_the_open_queue_without_a_reload(
    full_stack: Stack, console: httpx.AsyncClient
) -> None:
    name = f"ana-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    assert (await console.get("/events/queue")).status_code == 401  # the stream needs a session too
    marker = uuid.uuid4().hex[:8]
    OUTPUT.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []  # script exceptions and CSP refusals (not the browser's favicon probe)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
            loads: list[str] = []
            page.on("load", lambda p: loads.append(p.url))
            await page.goto(base + "/login")
            await page.get_by_label("Username").fill(name)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#live-status")).to_have_text("live", timeout=30_000)
            await expect(page.locator("#queue tr", has_text=marker)).to_have_count(0)
            # Survives only while the page is the same document: any reload or navigation drops it.
            await page.evaluate("window.sameDocument = true")
            seen = len(loads)

            gateway = f"http://127.0.0.1:{full_stack.ports['gateway']}"
            await whatsapp(gateway, new_phone(), f"I was charged twice, I want my money back now {marker}")
            row = page.locator("#queue tr", has_text=marker)
            await expect(row).to_have_count(1, timeout=60_000)
            await expect(row).to_have_class(re.compile(r"\bnew\b"))
            await expect(row.locator("td").nth(3)).to_have_text("refund")
            await expect(row.locator("td").nth(4)).to_have_text("whatsapp")
            ticket = await row.get_attribute("data-ticket")
            assert ticket
            await expect(page.locator("#live-notice")).to_contain_text(ticket)
            assert await page.evaluate("window.sameDocument") is True
            assert len(loads) == seen
            assert errors == []  # the script ran under the page's CSP without a violation
            await page.screenshot(path=str(OUTPUT / "console-live-queue.png"), full_page=True)
        finally:
            await browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (scripts/install-browser.sh)")
async def test_a_suggested_reply_is_edited_in_the_browser_and_exactly_the_edit_is_sent(full_stack: Stack) -> None:
    name = f"noor-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    marker = uuid.uuid4().hex[:8]
    gateway = f"http://127.0.0.1:{full_stack.ports['gateway']}"
    phone = new_phone()
    await whatsapp(gateway, phone, f"Let me talk to a real person please. How do I reset my password? {marker}")
    ticket = (await ticket_of(full_stack, marker)).name.removeprefix("tickets/")
    base = f"http://127.0.0.1:{full_stack.ports['console']}"
    OUTPUT.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1400})
            await page.goto(base + "/login")
            await page.get_by_label("Username").fill(name)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.goto(f"{base}/tickets/{ticket}")
            box = page.locator("#reply-text")
            await expect(box).to_have_value("")
            await page.locator("#suggest-reply").click()
            await expect(box).not_to_have_value("", timeout=30_000)
            draft = await box.input_value()
            assert "password" in draft.lower()  # drafted from the password article
            edited = draft.replace("Hi,", "Hi Rosa,", 1) + f"\n\nI have also reset your sessions ({marker})."
            await box.fill(edited)
            await page.screenshot(path=str(OUTPUT / "console-suggested-reply.png"), full_page=True)
            await page.locator("#send-reply").click()
            await expect(page.locator("#conversation")).to_contain_text(f"reset your sessions ({marker})")
        finally:
            await browser.close()
    # Exactly the edited text left, line breaks included (a browser sends them as CRLF).
    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        deliveries = await notifier_service_pb2_grpc.NotifierServiceStub(channel).ListDeliveries(
            notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket)
        )
    sent = [d.text_body for d in deliveries.deliveries if marker in d.text_body]
    assert sent == [edited]
    # ... and exactly that reached the customer's phone: what the (fake) Twilio API accepted.
    assert full_stack.providers is not None
    received = [m.body for m in full_stack.providers.twilio.messages() if m.to == f"whatsapp:{phone}"]
    assert [body for body in received if marker in body] == [edited]


async def _cookies(page: Page) -> dict[str, str]:
    return {c["name"]: c["value"] for c in await page.context.cookies() if "name" in c and "value" in c}


async def test_staff_escalate_an_answered_ticket_and_reassign_it(full_stack: Stack, console: httpx.AsyncClient) -> None:
    name, colleague = f"ivo-{uuid.uuid4().hex[:8]}", f"mia-{uuid.uuid4().hex[:8]}"
    await add_user(full_stack, name)
    await add_user(full_stack, colleague)
    assert (await sign_in(console, name)).status_code == 303
    marker = uuid.uuid4().hex[:8]
    gateway = f"http://127.0.0.1:{full_stack.ports['gateway']}"
    await whatsapp(gateway, new_phone(), f"How do I export a project to Excel? {marker}")
    answered = await ticket_of(full_stack, marker)
    ticket = answered.name.removeprefix("tickets/")

    async def page_of() -> str:
        async with asyncio.timeout(60):
            while True:  # the agent answers and resolves it
                page = (await console.get(f"/tickets/{ticket}")).text
                if 'id="ticket-status">resolved' in page:
                    return page
                await asyncio.sleep(0.5)

    page = await page_of()
    assert 'id="reassign-form"' not in page  # nothing to reassign on a resolved ticket...
    form = {
        "csrf_token": csrf(page),
        "request_id": request_id_of(page, "escalate-form"),  # ... but staff may reopen it for a person
        "reason": "legal",
        "detail": "A lawyer wrote in the same thread",
    }
    bad = await console.post(f"/tickets/{ticket}/escalate", data={**form, "reason": "bored"})
    assert bad.status_code == 400
    assert "reason 'bored' is not one of: pricing, refund, legal" in bad.text
    assert (await console.post(f"/tickets/{ticket}/escalate", data={**form, "csrf_token": "x"})).status_code == 403
    for _ in range(2):  # a resubmitted form escalates once
        assert (await console.post(f"/tickets/{ticket}/escalate", data=form)).status_code == 303
    page = (await console.get(f"/tickets/{ticket}")).text
    assert 'id="ticket-status">escalated' in page
    assert 'id="ticket-reason">legal' in page
    assert f"<dd>{form['detail']}</dd>" in page
    assert f'<option value="{colleague}">' in page

    unknown = await console.post(f"/tickets/{ticket}/assign", data={"csrf_token": csrf(page), "assignee": "nobody-x"})
    assert (unknown.status_code, unknown.text) == (400, "no staff member is called 'nobody-x'")
    moved = await console.post(f"/tickets/{ticket}/assign", data={"csrf_token": csrf(page), "assignee": colleague})
    assert moved.status_code == 303
    page = (await console.get(f"/tickets/{ticket}")).text
    assert f'id="ticket-assignee">{colleague}' in page
    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        found = await agent_service_pb2_grpc.AgentServiceStub(channel).GetTicket(
            agent_service_pb2.GetTicketRequest(name=answered.name)
        )
    assert (found.ticket.status, found.ticket.escalation_reason) == (
        agent_pb2.TICKET_STATUS_ESCALATED,
        common_pb2.ESCALATION_REASON_LEGAL,
    )
    assert found.ticket.assignee == colleague
    assert found.ticket.HasField("reply_due_time")  # escalated: a reply is due again
    trail = re.findall(r"UTC (\S+): (\w+)</li>", page)
    assert trail[:3] == [(name, "assign"), (name, "escalate"), (name, "escalate")]
