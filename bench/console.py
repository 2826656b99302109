"""The staff console under staff load: the queue page and the ticket page at --sessions (20)
concurrent signed-in sessions with --tickets (10,000) tickets in the agent's database, next to a
bare Starlette page (uvicorn process, a static page of the queue page's size) in the same run.

The console is the real process of the stack (sessions in PostgreSQL, every page through Envoy to
AgentService and IdentityService). Tickets are seeded straight into the agent's tables (a bench
fixture, never a way in for code): 5% escalated, 15% open, 10% in progress, the rest resolved,
two messages each, over 200 customers resolved through IdentityService. Each session loops: the
queue page, then a random queue ticket's page. Then the dashboard (--dashboard-sessions (5), each
loading it again and again: two GetTicketMetrics windows over all the tickets and the knowledge
gaps) against the same bare page.

Reports per page requests, p50 and p95, and the console/baseline ratios of the medians and the
p95s. No floor is judged here: the numbers are for comparing runs on the same machine.

    .venv/bin/python bench/console.py [--tickets 10000] [--sessions 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_stack.procs import Child, free_port, scratch_dir, wait_for_port
from fte_stack.stack import Stack, StackConfig

PASSWORD = "bench console password"
CUSTOMERS = 200
# Share of the tickets per status (the rest resolved): the queue shows the first three.
MIX = ((agent_pb2.TICKET_STATUS_ESCALATED, 0.05), (agent_pb2.TICKET_STATUS_OPEN, 0.15),
       (agent_pb2.TICKET_STATUS_IN_PROGRESS, 0.10))  # fmt: skip


def serve_baseline(port: int, size: int) -> None:
    """A bare Starlette app answering one static page of `size` bytes."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    body = "<!doctype html><html><body>" + "x" * max(0, size - 40) + "</body></html>"

    async def page(request: Request) -> Response:
        return HTMLResponse(body)

    app = Starlette(routes=[Route("/", page), Route("/tickets/{ticket}", page), Route("/dashboard", page)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def seed_customers(envoy: str, token: str) -> list[str]:
    async with connect(envoy, token=token, default_timeout=20) as channel:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        names = []
        for i in range(CUSTOMERS):
            email = f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com"
            reply = await identity.ResolveCustomer(
                identity_service_pb2.ResolveCustomerRequest(
                    channel=common_pb2.CHANNEL_EMAIL,
                    identifiers=[
                        identity_service_pb2.IdentifierInput(kind=identity_pb2.IDENTIFIER_KIND_EMAIL, value=email)
                    ],
                    display_name=f"Bench Customer {i}",
                )
            )
            names.append(reply.customer.name)
        return names


async def seed_tickets(database_url: str, customers: list[str], count: int) -> None:
    """`count` tickets with a conversation and two messages each, in the agent's own tables."""
    now = datetime.now(UTC)
    rng = random.Random(7)
    statuses: list[agent_pb2.TicketStatus.ValueType] = []
    for status, share in MIX:
        statuses += [status] * int(count * share)
    statuses += [agent_pb2.TICKET_STATUS_RESOLVED] * (count - len(statuses))
    rng.shuffle(statuses)
    conversations, tickets, messages = [], [], []
    for i, status in enumerate(statuses):
        tid, cid = f"TKT-B{i:07d}", f"conv-bench-{i:07d}"
        customer = customers[i % len(customers)]
        created = now - timedelta(minutes=rng.randint(1, 60 * 24 * 30))
        channel = (common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_WHATSAPP, common_pb2.CHANNEL_WEB_FORM)[i % 3]
        escalated = status == agent_pb2.TICKET_STATUS_ESCALATED
        conversations.append((cid, customer, created, created))
        tickets.append(
            (tid, customer, cid, channel, f"Bench ticket {i}: the export button does nothing", status,
             common_pb2.ESCALATION_REASON_REFUND if escalated else 0, rng.randint(1, 3), created, created,
             created + timedelta(hours=24) if escalated else None)
        )  # fmt: skip
        messages.append(
            (cid, tid, customer, agent_pb2.AUTHOR_CUSTOMER, channel, f"Question {i}: nothing exports.", created)
        )
        messages.append((cid, tid, customer, agent_pb2.AUTHOR_AGENT, channel, f"Answer {i}: try this.", created))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET search_path TO agent")
        await conn.copy_records_to_table(
            "conversations", records=conversations, columns=["id", "customer", "create_time", "last_activity_time"]
        )
        await conn.copy_records_to_table(
            "tickets",
            records=tickets,
            columns=["id", "customer", "conversation_id", "channel", "subject", "status", "escalation_reason",
                     "priority", "create_time", "update_time", "follow_up_by_time"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "messages",
            records=messages,
            columns=["conversation_id", "ticket_id", "customer", "author", "channel", "text", "create_time"],
        )
        await conn.execute("ANALYZE tickets; ANALYZE messages")
    finally:
        await conn.close()


async def add_user(stack: Stack, username: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fte_console", "users", "add", username, "--role", "agent",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=stack.children["console"].env,
    )  # fmt: skip
    _, err = await proc.communicate((PASSWORD + "\n").encode())
    if proc.returncode != 0:
        raise RuntimeError(err.decode())


async def sign_in(base: str, username: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=30)
    form = await client.get("/login")
    token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = await client.post("/login", data={"csrf_token": token, "username": username, "password": PASSWORD})
    if signed.status_code != 303:
        raise RuntimeError(f"sign-in failed: {signed.status_code}")
    return client


def tickets_in(queue_html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in queue_html.split('<tr data-ticket="')[1:]]


async def load(clients: list[httpx.AsyncClient], seconds: float) -> dict[str, list[float]]:
    """Each client: the queue page, then a random ticket of it, until the time is up."""
    times: dict[str, list[float]] = {"queue": [], "ticket": []}
    stop_at = time.perf_counter() + seconds
    rng = random.Random(11)

    async def session(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            queue = await client.get("/")
            times["queue"].append(time.perf_counter() - started)
            queue.raise_for_status()
            found = tickets_in(queue.text) or ["none"]
            started = time.perf_counter()
            page = await client.get(f"/tickets/{rng.choice(found)}")
            times["ticket"].append(time.perf_counter() - started)
            if page.status_code not in (200, 404):
                page.raise_for_status()

    await asyncio.gather(*(session(c) for c in clients))
    return times


async def load_dashboard(clients: list[httpx.AsyncClient], seconds: float) -> dict[str, list[float]]:
    """Each client: the dashboard, again and again, until the time is up."""
    times: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def session(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            page = await client.get("/dashboard")
            times.append(time.perf_counter() - started)
            page.raise_for_status()

    await asyncio.gather(*(session(c) for c in clients))
    return {"dashboard": times}


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18]


async def main(args: argparse.Namespace, work: Path) -> int:
    config = StackConfig.for_tests(
        work / "stack",
        services=["identity", "knowledge", "notifier", "agent", "console"],
        local_providers=False,
        extra_env={"FTE_CONSOLE_LOGIN_RATE_PER_MINUTE": "1000", "FTE_CONSOLE_LOG_LEVEL": "WARNING"},
    )
    print("starting the stack (identity, knowledge, notifier, agent, console, Envoy)...", flush=True)
    async with Stack(config) as stack:
        assert stack.info is not None
        envoy = f"127.0.0.1:{stack.ports['envoy']}"
        customers = await seed_customers(envoy, stack.tokens["staff"])
        started = time.perf_counter()
        await seed_tickets(stack.info.database_url, customers, args.tickets)
        print(f"seeded {args.tickets} tickets in {time.perf_counter() - started:.1f} s", flush=True)
        base_url = f"http://127.0.0.1:{stack.ports['console']}"
        username = f"bench-{uuid.uuid4().hex[:6]}"
        await add_user(stack, username)
        clients = [await sign_in(base_url, username) for _ in range(args.sessions)]
        size = len((await clients[0].get("/")).content)

        base_port = free_port()
        baseline = Child(
            "baseline", [sys.executable, __file__, "--serve-baseline", str(base_port), str(size)], work / "baseline.log"
        )
        await baseline.start()
        try:
            await wait_for_port(base_port, 30, "baseline", baseline.proc)
            bare = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{base_port}", timeout=30) for _ in clients]
            await load(clients, 2.0)  # warm-up: connections, caches
            await load(bare, 2.0)
            base = await load(bare, args.seconds)
            console = await load(clients, args.seconds)
            few, few_bare = clients[: args.dashboard_sessions], bare[: args.dashboard_sessions]
            await load_dashboard(few, 2.0)
            base |= await load_dashboard(few_bare, args.seconds / 2)
            console |= await load_dashboard(few, args.seconds / 2)
        finally:
            await baseline.stop()
            for c in clients + bare:
                await c.aclose()

    print(f"\nconsole, {args.sessions} sessions, {args.tickets} tickets, {args.seconds:.0f} s each; page {size} bytes")
    print(f"{'page':<8} {'target':<15} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for page in ("queue", "ticket", "dashboard"):
        if page == "dashboard":
            print(f"dashboard: {args.dashboard_sessions} sessions, {args.seconds / 2:.0f} s each")
        for name, times in (("bare starlette", base[page]), ("console", console[page])):
            ms = [t * 1000 for t in times]
            print(f"{page:<8} {name:<15} {len(ms):>9} {statistics.median(ms):>8.1f} {p95(ms):>8.1f}")
        ratio50 = statistics.median(console[page]) / statistics.median(base[page])
        ratio95 = p95(console[page]) / p95(base[page])
        print(f"{page:<8} console/bare    p50 x{ratio50:.1f}, p95 x{ratio95:.1f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-baseline":
        serve_baseline(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dashboard-sessions", type=int, default=5)
    with scratch_dir("fte-bench-console-") as work:
        sys.exit(asyncio.run(main(parser.parse_args(), work)))
