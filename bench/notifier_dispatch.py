"""Notifier dispatch: 5,000 deliveries (WhatsApp and email) through a real notifier process to the
local fake Twilio and Gmail APIs, against a baseline of the same SDK calls made directly.

Two phases against one notifier process: a burst (5,000 SendMessage calls as fast as 64 callers
go: throughput, first SendMessage to last provider call) and a paced run (1,000 at 100/s, below
capacity: the latency from SendMessage to the provider receiving the call without a backlog).
Also SendMessage latency, and duplicates (must be zero). The baseline
is the same mix of provider calls made straight from a thread pool (no outbox, no dispatcher),
measured before and after the notifier run in the same process; the ratio shows what the outbox
costs against the providers' own capacity. The fakes run on their own thread and event loop.

    .venv/bin/python bench/notifier_dispatch.py [--deliveries 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_notifier.mime import build_email, gmail_raw
from fte_notifier.providers import GmailSender, WhatsAppSender
from fte_notifier.settings import NotifierSettings
from fte_runtime.grpc_client import connect
from fte_stack.fakes.gmail import FakeGmail
from fte_stack.fakes.twilio import FakeTwilio
from fte_stack.postgres import PostgresServer
from fte_stack.procs import Child, free_port, scratch_dir, wait_for_port

TOKEN = "bench-token"
THREADS = 32
SENT = common_pb2.DELIVERY_STATUS_SENT
GMAIL_TOKEN = "bench-gmail-access-token"


class Fakes:
    """The fake providers on a thread of their own, so the load generator does not slow them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fakes", daemon=True)
        self.twilio = FakeTwilio()
        self.gmail = FakeGmail()

    def start(self) -> None:
        self.thread.start()
        for fake in (self.twilio, self.gmail):
            asyncio.run_coroutine_threadsafe(fake.start(), self.loop).result(10)

    def stop(self) -> None:
        for fake in (self.twilio, self.gmail):
            asyncio.run_coroutine_threadsafe(fake.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def settings(self, **extra: object) -> dict[str, str]:
        env = {
            "FTE_NOTIFIER_GMAIL_ACCESS_TOKEN": GMAIL_TOKEN,
            "FTE_NOTIFIER_GMAIL_API_ENDPOINT": self.gmail.url,
            "FTE_NOTIFIER_TWILIO_ACCOUNT_SID": self.twilio.account_sid,
            "FTE_NOTIFIER_TWILIO_AUTH_TOKEN": self.twilio.auth_token,
            "FTE_NOTIFIER_TWILIO_API_BASE_URL": self.twilio.url,
        }
        env.update({f"FTE_NOTIFIER_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    def received(self) -> list[tuple[str, float]]:
        """(token in the text, time the provider received it) for every message accepted."""
        out = [
            (m.body.split()[-1].rstrip("."), m.received_at) for m in self.twilio.messages() if "bench-token-" in m.body
        ]
        for m in self.gmail.sent():
            if b"bench-token-" not in m.raw:
                continue  # a baseline message
            token = m.raw.split(b"bench-token-", 1)[1].split(b".", 1)[0].decode()
            out.append((f"bench-token-{token}", m.internal_date_ms / 1000))
        return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def baseline(fakes: Fakes, calls: int, whatsapp_share: float) -> tuple[float, float, float]:
    """The same SDK calls made directly: calls/s, p50 ms, p99 ms."""
    settings = NotifierSettings.model_validate(
        {k.removeprefix("FTE_NOTIFIER_").lower(): v for k, v in fakes.settings().items()}
    )
    wa, gm = WhatsAppSender(settings), GmailSender(settings)
    n_wa = int(calls * whatsapp_share)

    def one(i: int) -> float:
        started = time.perf_counter()
        if i < n_wa:
            wa.send(f"whatsapp:+1415555{i % 10000:04d}", f"Baseline message base-{i}.", None, None)
        else:
            msg = build_email(
                sender="support@example.com",
                recipient="customer@example.org",
                subject="Baseline",
                text=f"Baseline email base-{i}.",
                message_id=f"{uuid.uuid4()}@bench",
                reply_to=None,
            )
            gm.send(gmail_raw(msg), "")
        return time.perf_counter() - started

    began = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        latencies = list(pool.map(one, range(calls)))
    elapsed = time.perf_counter() - began
    return calls / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def requests(count: int, whatsapp_share: float) -> Iterator[notifier_service_pb2.SendMessageRequest]:
    now = time.time()
    for i in range(count):
        token = f"bench-token-{i}"
        if i % 100 < whatsapp_share * 100:
            req = notifier_service_pb2.SendMessageRequest(
                request_id=f"bench-{i}",
                channel=common_pb2.CHANNEL_WHATSAPP,
                recipient=f"whatsapp:+1415555{i % 10000:04d}",
                text_body=f"Thanks for your patience, here is the answer {token}.",
            )
            req.customer_last_message_time.FromSeconds(int(now) - 600)
        else:
            req = notifier_service_pb2.SendMessageRequest(
                request_id=f"bench-{i}",
                channel=common_pb2.CHANNEL_EMAIL,
                recipient="customer@example.org",
                subject="Your question",
                text_body=f"Thanks for your patience, here is the answer {token}.",
            )
        yield req


async def send_phase(
    stub: notifier_service_pb2_grpc.NotifierServiceAsyncStub,
    fakes: Fakes,
    reqs: list[notifier_service_pb2.SendMessageRequest],
    concurrency: int,
    rate: float | None,
) -> dict[str, float]:
    """Send `reqs` (as fast as `concurrency` allows, or paced at `rate`/s) and wait for the
    providers to receive them all; rates, latencies and duplicates of this phase."""
    sent_at: dict[str, float] = {}
    rpc_ms: list[float] = []

    async def one(req: notifier_service_pb2.SendMessageRequest) -> None:
        sent_at[req.text_body.split()[-1].rstrip(".")] = time.time()
        started = time.perf_counter()
        await stub.SendMessage(req)
        rpc_ms.append((time.perf_counter() - started) * 1000)

    began = time.time()
    if rate is None:
        pending = iter(reqs)

        async def caller() -> None:
            for req in pending:
                await one(req)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    else:
        tasks = []
        for i, req in enumerate(reqs):
            await asyncio.sleep(max(0.0, began + i / rate - time.time()))
            tasks.append(asyncio.create_task(one(req)))
        await asyncio.gather(*tasks)
    submitted = time.time() - began

    def mine() -> list[tuple[str, float]]:
        return [(t, when) for t, when in fakes.received() if t in sent_at]

    deadline = time.monotonic() + 300
    while len({t for t, _ in mine()}) < len(reqs) and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread's state
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # anything sent twice would arrive by now
    received = mine()
    counts = Counter(token for token, _ in received)
    first_seen: dict[str, float] = {}
    for token, when in received:
        first_seen[token] = min(when, first_seen.get(token, when))
    latency = [(first_seen[t] - sent_at[t]) * 1000 for t in first_seen]
    last = max(when for _, when in received)
    return {
        "deliveries": len(counts),
        "duplicates": sum(n - 1 for n in counts.values()),
        "rate": len(counts) / (last - began),
        "submit_rate": len(reqs) / submitted,
        "p50": percentile(latency, 0.5),
        "p99": percentile(latency, 0.99),
        "rpc_p50": percentile(rpc_ms, 0.5),
        "rpc_p99": percentile(rpc_ms, 0.99),
    }


async def run_notifier(
    args: argparse.Namespace, root: Path, fakes: Fakes, dsn: str
) -> tuple[dict[str, float], dict[str, float], int]:
    port = free_port()
    grants = {TOKEN: {"principal": "bench", "scopes": ["notifier.send", "notifier.read"]}}
    env = fakes.settings(
        grpc_port=port,
        database_url=dsn,
        database_pool_max=20,
        auth_tokens=json.dumps(grants),
        kafka_enabled="false",
        log_level="WARNING",
        dispatch_concurrency=args.dispatch_concurrency,
        provider_threads=THREADS,
        dispatch_poll_seconds=0.05,
    )
    child = Child("notifier", [sys.executable, "-m", "fte_notifier", "serve"], root / "notifier.log", env=env)
    await wait_for_port(port, 60, "notifier", await child.start())
    channel = connect(f"127.0.0.1:{port}", token=TOKEN, default_timeout=30)
    try:
        stub = notifier_service_pb2_grpc.NotifierServiceStub(channel)
        everything = list(requests(args.deliveries + args.paced, args.whatsapp_share))
        burst = await send_phase(stub, fakes, everything[: args.deliveries], args.concurrency, None)
        paced = await send_phase(stub, fakes, everything[args.deliveries :], args.concurrency, args.paced_rate)
        conn = await asyncpg.connect(dsn)
        try:
            sent = await conn.fetchval("SELECT count(*) FROM notifier.deliveries WHERE status = $1", SENT)
        finally:
            await conn.close()
    finally:
        await channel.close()
        await child.stop(15)
    return burst, paced, sent


async def main(args: argparse.Namespace, root: Path) -> None:
    postgres = PostgresServer(root / "postgres", free_port())
    fakes = Fakes()
    try:
        await postgres.start()
        fakes.start()
        dsn = await postgres.create_database("bench_notifier")
        base_calls = max(200, args.deliveries // 5)
        base = [await asyncio.to_thread(baseline, fakes, base_calls, args.whatsapp_share)]
        burst, paced, sent = await run_notifier(args, root, fakes, dsn)
        base.append(await asyncio.to_thread(baseline, fakes, base_calls, args.whatsapp_share))
    finally:
        with contextlib.suppress(Exception):
            fakes.stop()
        await postgres.stop()
    b_rate = statistics.median(b[0] for b in base)
    b_p50 = statistics.median(b[1] for b in base)
    b_p99 = statistics.median(b[2] for b in base)
    print(
        f"notifier dispatch: {args.deliveries} deliveries ({args.whatsapp_share:.0%} WhatsApp, rest email) from "
        f"{args.concurrency} concurrent SendMessage callers, then {args.paced} paced at {args.paced_rate:.0f}/s; "
        f"dispatcher concurrency {args.dispatch_concurrency}"
    )
    print(f"{'':40}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        (f"baseline: direct SDK calls (x{base_calls})", b_rate, b_p50, b_p99),
        ("burst: SendMessage RPC", burst["submit_rate"], burst["rpc_p50"], burst["rpc_p99"]),
        ("burst: SendMessage -> provider call", burst["rate"], burst["p50"], burst["p99"]),
        ("paced: SendMessage RPC", paced["submit_rate"], paced["rpc_p50"], paced["rpc_p99"]),
        ("paced: SendMessage -> provider call", paced["rate"], paced["p50"], paced["p99"]),
    ]
    for label, rate, p50, p99 in rows:
        print(f"{label:40}{rate:>10.0f}{p50:>10.1f}{p99:>10.1f}")
    print(f"ratio burst deliveries/s / baseline calls/s: {burst['rate'] / b_rate:.2f}")
    total = args.deliveries + args.paced
    delivered = burst["deliveries"] + paced["deliveries"]
    duplicates = burst["duplicates"] + paced["duplicates"]
    print(f"delivered {delivered:.0f}/{total}, status SENT {sent}, duplicates {duplicates:.0f}")
    if duplicates or delivered != total or sent != total:
        sys.exit(1)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent SendMessage callers")
    parser.add_argument("--dispatch-concurrency", type=int, default=32)
    parser.add_argument("--whatsapp-share", type=float, default=0.7)
    parser.add_argument("--paced", type=int, default=1000, help="deliveries sent at a steady rate after the burst")
    parser.add_argument("--paced-rate", type=float, default=100.0)
    args = parser.parse_args()
    with scratch_dir("fte-bench-notifier-") as root:
        asyncio.run(main(args, root))


if __name__ == "__main__":
    cli()
