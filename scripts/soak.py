"""The 24-hour test, compressed: customers write on all three channels through the real webhooks
(Twilio and Pub/Sub retrying some deliveries, as they do), while processes of the stack are
SIGKILLed at random and PostgreSQL is killed once mid-run; the stack's supervisor restarts each.
On Apache Kafka (`make soak-kafka`: scripts/apache_kafka.py runs the broker and restarts it when it
dies) the broker is SIGKILLed once too, three quarters of the way through.
Replies are counted where a customer would see them: the fake Twilio (WhatsApp), the fake Gmail
(email, matched to the mail it answers by In-Reply-To) and the ticket's status page (web form).

Every message must get exactly one reply: lost 0, doubled 0, or the run fails. It reports the
uptime of the public endpoint (the gateway's /readyz, polled), and p50/p95 from the webhook's
acceptance to the reply at the provider.

    .venv/bin/python scripts/soak.py [--web 100] [--email 50] [--whatsapp 50] [--people 10]
                                     [--duplicates 0.2] [--kills 9] [--rate 4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email
import email.policy
import json
import os
import random
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from fte_stack.fakes.gmail import build_email
from fte_stack.fakes.twilio import inbound_whatsapp
from fte_stack.procs import scratch_dir
from fte_stack.providers import MAILBOX, TWILIO_AUTH_TOKEN
from fte_stack.stack import Stack, StackConfig

REPO = Path(__file__).resolve().parent.parent
DEV_SET = REPO / "services" / "agent" / "tests" / "data" / "dev_set.jsonl"
VICTIMS = ("gateway", "agent", "knowledge", "identity", "notifier", "envoy")


@dataclass
class Sent:
    channel: str  # "whatsapp", "email", "web_form"
    to: str  # where the reply goes: whatsapp address, inbound Message-ID, or status reference
    accepted_at: float
    duplicates: int = 0


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    ready_polls: int = 0
    ready_ok: int = 0
    failed_posts: int = 0


def texts() -> list[str]:
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows if 10 <= len(r["text"].strip()) <= 400]


def new_phone(rng: random.Random) -> str:
    return f"+1415{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"


class Customers:
    """Senders through the public webhooks, retrying as the providers do until accepted."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, run: Run) -> None:
        self.stack = stack
        self.http = http
        self.run = run
        self.gateway = f"http://127.0.0.1:{stack.ports['gateway']}"

    async def _post(self, path: str, **kwargs: object) -> httpx.Response:
        # Twilio (with its retry policy) and Pub/Sub redeliver until the endpoint answers 2xx;
        # a web form's visitor submits again.
        for attempt in range(120):
            try:
                resp = await self.http.post(self.gateway + path, **kwargs)  # type: ignore[arg-type]
                if resp.status_code < 500:
                    return resp
            except httpx.HTTPError:
                pass
            self.run.failed_posts += 1
            await asyncio.sleep(min(5.0, 0.25 * 2 ** min(attempt, 4)))
        raise RuntimeError(f"{path} never accepted the request")

    async def whatsapp(self, phone: str, text: str, duplicate: bool) -> Sent:
        url = self.gateway + "/webhooks/whatsapp"
        params, headers = inbound_whatsapp(url, phone, text, auth_token=TWILIO_AUTH_TOKEN, name="Soak")
        resp = await self._post("/webhooks/whatsapp", data=params, headers=headers)
        assert resp.status_code in (200, 204), resp.text
        sent = Sent("whatsapp", f"whatsapp:{phone}", time.time())
        if duplicate:  # Twilio retries the same MessageSid
            await self._post("/webhooks/whatsapp", data=params, headers=headers)
            sent.duplicates += 1
        return sent

    async def email(self, address: str, text: str, duplicate: bool) -> Sent:
        assert self.stack.providers is not None
        message_id = f"<{uuid.uuid4().hex}@mail.customer.example>"
        raw = build_email(sender=address, to=MAILBOX, subject="Question", text=text, message_id=message_id)
        stored = self.stack.providers.gmail.deliver(raw)  # announced to the gateway like Pub/Sub
        sent = Sent("email", message_id, time.time())
        if duplicate:  # Pub/Sub delivers the same notification again
            await self.stack.providers.push(stored.history_id)
            sent.duplicates += 1
        return sent

    async def web_form(self, address: str, text: str) -> Sent:
        form = {"name": "Soak", "email": address, "subject": "Question", "message": text, "category": "general"}
        resp = await self._post("/support/submit", json=form)
        assert resp.status_code == 202, resp.text
        return Sent("web_form", resp.json()["reference"], time.time())


async def chaos(
    stack: Stack,
    run: Run,
    *,
    kills: int,
    every: float,
    rng: random.Random,
    stop: asyncio.Event,
    broker_pid_file: Path | None = None,
) -> None:
    """SIGKILLs a process every `every` seconds, PostgreSQL once, halfway, and the external broker
    once (its pid in `broker_pid_file`), three quarters of the way. The others are drawn in
    shuffled rounds of every victim, so enough kills hit each service and Envoy at least once."""
    order: list[str] = []
    for n in range(kills):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        if n == kills // 2:
            pid = int((stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            run.kills["postgres"] += 1
            continue
        if broker_pid_file is not None and n == (3 * kills) // 4:
            os.kill(int(await asyncio.to_thread(broker_pid_file.read_text)), signal.SIGKILL)
            run.kills["kafka broker"] += 1
            continue
        if not order:
            order = rng.sample(VICTIMS, len(VICTIMS))
        victim = order.pop()
        child = stack.envoy.child if victim == "envoy" and stack.envoy else stack.children.get(victim)
        if child is not None and child.running:
            child.kill()
            run.kills[victim] += 1


async def poll_ready(stack: Stack, run: Run, stop: asyncio.Event) -> None:
    url = f"http://127.0.0.1:{stack.ports['gateway']}/readyz"
    async with httpx.AsyncClient(timeout=1.0) as http:
        while not stop.is_set():
            run.ready_polls += 1
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    run.ready_ok += 1
            await asyncio.sleep(0.5)


def replies(stack: Stack) -> tuple[collections.Counter[str], dict[str, list[float]]]:
    """Replies at the provider fakes, by where they went, and when each arrived."""
    assert stack.providers is not None
    counts: collections.Counter[str] = collections.Counter()
    times: dict[str, list[float]] = collections.defaultdict(list)
    for whatsapp in stack.providers.twilio.messages():
        counts[whatsapp.to] += 1
        times[whatsapp.to].append(whatsapp.received_at)
    for mail in stack.providers.gmail.sent():
        parsed = email.message_from_bytes(mail.raw, policy=email.policy.default)
        answered = str(parsed["In-Reply-To"] or "").strip()
        counts[answered] += 1
        times[answered].append(mail.internal_date_ms / 1000)
    return counts, times


async def status_page(http: httpx.AsyncClient, gateway: str, reference: str) -> tuple[int, list[float]]:
    """From a web-form ticket's status page: how many customer messages it holds (a person who
    also writes by email may add to it), and when each reply appeared."""
    resp = await http.get(f"{gateway}/support/ticket/{reference}", headers={"Accept": "application/json"})
    if resp.status_code != 200:
        return 1, []
    messages = resp.json().get("messages", [])
    # An empty page ("received": no ticket yet) still owes the submission its reply.
    asked = max(1, sum(1 for m in messages if m.get("author") == "You"))
    return asked, [datetime.fromisoformat(m["time"]).timestamp() for m in messages if m.get("author") != "You"]


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(ordered):.1f} s / {p95:.1f} s"


async def main(args: argparse.Namespace, root: Path) -> int:
    rng = random.Random(args.seed)
    questions = texts()
    config = StackConfig.for_tests(
        root / "stack",
        services=["identity", "knowledge", "notifier", "agent", "gateway"],
        # Every simulated visitor posts from 127.0.0.1: the per-address form limit would refuse them.
        extra_env={"FTE_GATEWAY_FORM_RATE_PER_MINUTE": "0"},
        kafka_bootstrap=args.kafka_bootstrap,
        kafka_idempotence=args.kafka_idempotence,
    )
    pid_file = os.environ.get("FTE_KAFKA_BROKER_PID_FILE") if args.kafka_bootstrap else None
    print("starting the stack (supervised, with the provider fakes)...", flush=True)
    async with Stack(config) as stack, httpx.AsyncClient(timeout=10) as http:
        run = Run()
        customers = Customers(stack, http, run)
        # People on several channels: one phone and one address each, used on every channel.
        people = [(new_phone(rng), f"soak.{uuid.uuid4().hex[:8]}@customer.example") for _ in range(args.people)]
        plan = ["web_form"] * args.web + ["email"] * args.email + ["whatsapp"] * args.whatsapp
        rng.shuffle(plan)
        stop = asyncio.Event()
        every = args.kill_every or len(plan) / args.rate / (args.kills + 1)
        tasks = [
            # Spread over the sending, so every kill lands while messages flow.
            asyncio.create_task(
                chaos(
                    stack,
                    run,
                    kills=args.kills,
                    every=every,
                    rng=rng,
                    stop=stop,
                    broker_pid_file=Path(pid_file) if pid_file else None,
                )
            ),
            asyncio.create_task(poll_ready(stack, run, stop)),
        ]
        started = time.monotonic()

        async def send(i: int, channel: str) -> None:
            text = f"{rng.choice(questions)}"
            shared = people[i % len(people)] if people and rng.random() < 0.3 else None
            phone, address = shared or (new_phone(rng), f"soak.{uuid.uuid4().hex[:10]}@customer.example")
            duplicate = rng.random() < args.duplicates
            if channel == "whatsapp":
                run.sent.append(await customers.whatsapp(phone, text, duplicate))
            elif channel == "email":
                run.sent.append(await customers.email(address, text, duplicate))
            else:
                run.sent.append(await customers.web_form(address, text))

        pending = []
        for i, channel in enumerate(plan):
            pending.append(asyncio.create_task(send(i, channel)))
            await asyncio.sleep(1 / args.rate)
        await asyncio.gather(*pending)
        sending_seconds = time.monotonic() - started
        # Pub/Sub keeps redelivering a notification the gateway missed while it was down.
        assert stack.providers is not None
        await stack.providers.push(stack.providers.gmail.state.history_id)

        expected = collections.Counter(s.to for s in run.sent if s.channel != "web_form")
        deadline = time.monotonic() + args.timeout
        web = [s for s in run.sent if s.channel == "web_form"]
        pages: dict[str, tuple[int, list[float]]] = {}
        while time.monotonic() < deadline:
            counts, _ = replies(stack)
            for s in web:
                asked, answered = pages.get(s.to, (1, []))
                if len(answered) < asked:
                    pages[s.to] = await status_page(http, customers.gateway, s.to)
            answered_all = all(len(pages[s.to][1]) >= pages[s.to][0] for s in web)
            if all(counts[k] >= n for k, n in expected.items()) and answered_all:
                break
            await asyncio.sleep(2)
        # Late doubles still count: wait a little more, then look again.
        await asyncio.sleep(args.settle)
        stop.set()
        await asyncio.gather(*tasks)
        counts, times = replies(stack)
        for s in web:
            pages[s.to] = await status_page(http, customers.gateway, s.to)
        restarts = stack.supervisor.restarts()

    rows = []
    failed = False
    for channel, title in (("web_form", "web form"), ("email", "email"), ("whatsapp", "WhatsApp")):
        mine = [s for s in run.sent if s.channel == channel]
        if channel == "web_form":
            # One reply on the page per customer message it holds.
            got = {s.to: len(pages.get(s.to, (1, []))[1]) for s in mine}
            want = {s.to: pages.get(s.to, (1, []))[0] for s in mine}
            arrival = {s.to: pages.get(s.to, (1, []))[1] for s in mine}
        else:
            want = collections.Counter(s.to for s in mine)
            got = {k: counts[k] for k in want}
            arrival = {k: times.get(k, []) for k in want}
        lost = sum(max(0, want[k] - got[k]) for k in want)
        doubled = sum(max(0, got[k] - want[k]) for k in want)
        latencies = []
        for s in sorted(mine, key=lambda s: s.accepted_at):
            # The n-th message to one recipient pairs with its n-th reply.
            n = sum(1 for x in mine if x.to == s.to and x.accepted_at < s.accepted_at)
            arrived = sorted(arrival.get(s.to, []))
            if n < len(arrived):
                latencies.append(max(0.0, arrived[n] - s.accepted_at))
        failed |= bool(lost or doubled)
        dupes = sum(s.duplicates for s in mine)
        rows.append((title, len(mine), dupes, sum(got.values()), lost, doubled, percentiles(latencies)))

    uptime = 100.0 * run.ready_ok / max(1, run.ready_polls)
    print(
        f"\nsoak: {len(run.sent)} messages in {sending_seconds:.0f} s ({args.people} people on several channels), "
        f"{sum(run.kills.values())} SIGKILLs ({', '.join(f'{k} x{v}' for k, v in sorted(run.kills.items()))})"
    )
    header = f"{'channel':<10} {'sent':>5} {'repeated':>8} {'replies':>8} {'lost':>5} {'doubled':>8}"
    print(f"{header}  webhook -> reply p50 / p95")
    for title, n, dupes, got_n, lost, doubled, lat in rows:
        print(f"{title:<10} {n:>5} {dupes:>8} {got_n:>8} {lost:>5} {doubled:>8}  {lat}")
    print(f"public endpoint uptime (gateway /readyz every 0.5 s): {uptime:.1f}% of {run.ready_polls} polls")
    print(f"webhook posts refused or unanswered, then retried: {run.failed_posts}")
    print(f"restarts by the stack's supervisor: {dict(sorted(restarts.items()))}")
    print("RESULT:", "FAILED (lost or doubled replies)" if failed else "ok: lost 0, doubled 0")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--web", type=int, default=100)
    parser.add_argument("--email", type=int, default=50)
    parser.add_argument("--whatsapp", type=int, default=50)
    parser.add_argument("--people", type=int, default=10, help="customers who write on several channels")
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of deliveries the provider repeats")
    parser.add_argument(
        "--kills",
        type=int,
        default=9,
        help="SIGKILLs during the run (one of them PostgreSQL; 7 or more hit every service)",
    )
    parser.add_argument("--kill-every", type=float, default=0.0, help="seconds between kills (0: spread over the run)")
    parser.add_argument("--rate", type=float, default=4.0, help="messages sent per second")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every reply")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to keep watching for late doubles")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kafka-bootstrap", default=None, help="an external broker instead of the stack's Tansu")
    parser.add_argument("--kafka-idempotence", action="store_true")
    args = parser.parse_args()
    with scratch_dir("fte-soak-") as root:
        sys.exit(asyncio.run(main(args, root)))
