"""The whole answering pipeline: MessageReceived events injected into the broker -> agent ->
identity, knowledge, notifier (all through Envoy) -> the reply handed to the provider (the
notifier's ReplyDelivered sent_time). Offline engine.

Phases (texts cycled from the agent's labeled dev set over the three channels, two messages per
customer):
  light   --light-messages at --light-rate msg/s, well below capacity: the pipeline's own latency;
  full    --messages (2,000) injected at --rate msg/s (100): p50/p95/p99 from publish to the reply
          sent at that load, against the floor p95 <= 1 s;
  burst   --messages (2,000) injected at once: the messages/s the pipeline drains (first publish
          to last reply sent), against the floor >= 100 msg/s. At a steady 100 msg/s the drained
          rate can only approach 100, so capacity is measured with the backlog; its latencies are
          queueing and are reported, not judged.
Every message must get exactly one delivery (checked in the notifier) and nothing may reach the
DLQ. Baseline, same run: the broker alone (publish -> consume of the same number of records).
CPU per message is reported for each process of the stack.

Tracing's cost: the phases run on a stack with tracing off, then on one with tracing on (Jaeger in
the stack, every span of every service and Envoy exported to it); medians, rates, CPU per message
and the on/off ratios are printed (`--traces off|on` runs one only).

    .venv/bin/python bench/pipeline.py [--messages 2000] [--rate 100] [--light-messages 300] [--traces both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2, message_events_pb2
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_agent.processor import reply_request_id
from fte_knowledge import crosslingual
from fte_runtime import envelope, topics
from fte_runtime.embeddings import LOCAL_MODEL
from fte_runtime.grpc_client import connect
from fte_runtime.kafka import ensure_topics
from fte_stack.procs import scratch_dir
from fte_stack.stack import Stack, StackConfig

REPO = Path(__file__).resolve().parent.parent
DEV_SET = REPO / "services" / "agent" / "tests" / "data" / "dev_set.jsonl"
CHANNELS = {
    "email": common_pb2.CHANNEL_EMAIL,
    "whatsapp": common_pb2.CHANNEL_WHATSAPP,
    "web_form": common_pb2.CHANNEL_WEB_FORM,
}
OUTCOMES = envelope.type_map(delivery_events_pb2.ReplyDelivered, delivery_events_pb2.DeliveryFailed)


def build_messages(count: int, run: str) -> list[tuple[str, message_events_pb2.MessageReceived]]:
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines() if line.strip()]
    customers = max(1, count // 2)
    out = []
    for i in range(count):
        row = rows[i % len(rows)]
        c = i % customers
        channel = CHANNELS[row["channel"]]
        msg = message_events_pb2.MessageReceived(
            channel=channel,
            channel_message_id=f"bench-{run}-{i}",
            display_name=row["display_name"],
            subject=row["subject"],
            text_body=row["text"],
        )
        msg.received_time.FromDatetime(datetime.now(UTC))
        if channel == common_pb2.CHANNEL_WHATSAPP:
            phone = f"+1415{2_000_000 + (hash((run, c)) % 7_000_000):07d}"
            msg.sender.whatsapp_address = f"whatsapp:{phone}"
            msg.sender.phone = phone
            key = f"whatsapp:{msg.sender.whatsapp_address}"
        else:
            msg.sender.email = f"bench-{run}-{c}@customer.example"
            # What the gateway sets for ordinary mail whose Gmail authentication passed.
            msg.sender.email_authenticated = channel == common_pb2.CHANNEL_EMAIL
            key = f"{row['channel']}:{msg.sender.email}"
            if channel == common_pb2.CHANNEL_WEB_FORM:
                msg.web_form.ticket_reference = f"B-{run}-{i}"
        out.append((key, msg))
    return out


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by this stack's processes: each service, Envoy, the broker, Jaeger, and
    PostgreSQL's postmaster with its backends (other processes on the machine are not counted)."""
    out = {name: _cpu_of(child.proc.pid) for name, child in stack.children.items() if child.proc is not None}
    mine = {os.getpid()}
    postmaster = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        postmaster = int((stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(stat[1])
        if comm in ("envoy", "tansu", "jaeger") and ppid in mine:
            out[comm] = out.get(comm, 0.0) + _cpu_of(pid)
        elif comm == "postgres" and postmaster and postmaster in (pid, ppid):
            out["postgres"] = out.get("postgres", 0.0) + _cpu_of(pid)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class OutcomeWatcher:
    """Consumes ReplyDelivered from the end of the topic and notes when each request id arrives."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
        self.seen: dict[str, float] = {}  # request id -> when its ReplyDelivered event arrived
        self.sent_at: dict[str, float] = {}  # request id -> when the provider accepted the reply (wall clock)
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        parts = [TopicPartition(topics.DELIVERY_OUTCOMES, p) for p in range(3)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        for tp in parts:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batches.values():
                for r in records:
                    event = envelope.decode(r.value, r.headers, OUTCOMES).message
                    if isinstance(event, delivery_events_pb2.DeliveryFailed):
                        self.failed += 1
                    elif isinstance(event, delivery_events_pb2.ReplyDelivered):
                        self.seen.setdefault(event.request_id, now)
                        self.sent_at.setdefault(event.request_id, event.sent_time.ToNanoseconds() / 1e9)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()


async def inject(
    producer: AIOKafkaProducer, batch: list[tuple[str, message_events_pb2.MessageReceived]], rate: float | None
) -> dict[str, float]:
    sent: dict[str, float] = {}  # request id -> wall-clock publish time
    start = time.monotonic()
    for i, (key, msg) in enumerate(batch):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        value, headers = envelope.encode(msg, source="//bench")
        sent[reply_request_id(msg.channel, msg.channel_message_id)] = time.time()
        await producer.send(topics.TICKETS_INCOMING, value=value, key=key.encode(), headers=headers)
    await producer.flush()
    return sent


async def wait_all(watcher: OutcomeWatcher, wanted: dict[str, float], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # Polls what the watcher task fills in; a few checks a second are plenty.
    while time.monotonic() < deadline and not all(r in watcher.seen for r in wanted):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def broker_baseline(bootstrap: str, count: int, rate: float) -> list[float]:
    """The broker alone at the same injection rate: publish -> consume, same client settings."""
    topic = f"bench.baseline.{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    sent: dict[bytes, float] = {}
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < count:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.monotonic()
                latencies.extend(now - sent[r.key] for r in records if r.key in sent)

    reader = asyncio.create_task(consume())
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"k{i}".encode()
            sent[key] = time.monotonic()
            await producer.send(topic, value=b"x" * 300, key=key)
        await producer.flush()
        await asyncio.wait_for(reader, timeout=30)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    return latencies


async def count_deliveries(target: str, token: str, wanted: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with connect(target, token=token, default_timeout=20) as channel:
        stub = notifier_service_pb2_grpc.NotifierServiceStub(channel)
        page_token = ""
        while True:
            page = await stub.ListDeliveries(
                notifier_service_pb2.ListDeliveriesRequest(page_size=100, page_token=page_token)
            )
            for d in page.deliveries:
                if d.request_id in wanted:
                    counts[d.request_id] = counts.get(d.request_id, 0) + 1
            page_token = page.next_page_token
            if not page_token:
                return counts


async def background_vectors_done(dsn: str, timeout: float) -> None:
    """Waits until every chunk has a vector for each model the knowledge service embeds with."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = await conn.fetchval(
                """SELECT count(*) FROM knowledge.chunks c, unnest($1::text[]) AS m(model)
                   WHERE NOT EXISTS (SELECT 1 FROM knowledge.chunk_embeddings e
                                     WHERE e.chunk_id = c.id AND e.model = m.model)""",
                [LOCAL_MODEL, crosslingual.MODEL],
            )
            if missing == 0:
                return
            await asyncio.sleep(1.0)
        raise TimeoutError("the knowledge service's background vectors did not finish")
    finally:
        await conn.close()


async def dlq_count(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topics.dead_letter_topic(topics.TICKETS_INCOMING), p) for p in range(3)]
        ends = await consumer.end_offsets(parts)
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


@dataclass
class Measured:
    base: list[float]
    results: dict[str, Any]
    counts: dict[str, int]
    dead: int
    failed: int


async def measure(args: argparse.Namespace, state: Path, traces: bool) -> Measured:
    config = StackConfig.for_tests(
        state / "stack",
        services=["identity", "knowledge", "notifier", "agent"],
        local_providers=False,
        # One embedding thread: on 2 shared cores, more threads only spin against the other services.
        extra_env={"FTE_KNOWLEDGE_EMBEDDING_THREADS": str(args.embedding_threads)},
        # Tracing on: Jaeger runs in the stack and every service and Envoy export every span to it.
        traces=traces,
    )
    tracing = "on (every span exported to Jaeger)" if traces else "off"
    print(
        f"starting the stack (identity, knowledge + sample KB, notifier, agent, Envoy), tracing {tracing}...",
        flush=True,
    )
    async with Stack(config) as stack:
        bootstrap = stack.kafka_bootstrap
        # The sample KB's cross-lingual vectors are computed in the background after the import:
        # measure the steady state, not that catch-up.
        assert stack.info is not None
        await background_vectors_done(stack.info.database_url, timeout=args.timeout)
        base = await broker_baseline(bootstrap, min(args.messages, 500), args.rate)
        watcher = OutcomeWatcher(bootstrap)
        await watcher.start()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        await producer.start()
        results: dict[str, Any] = {}
        try:
            # Warm-up: first calls load connections and caches.
            warm = build_messages(20, "warm")
            await wait_all(watcher, await inject(producer, warm, 20), 60)
            phases = (
                ("light", args.light_messages, args.light_rate),
                ("full", args.messages, args.rate),
                ("burst", args.messages, None),
            )
            for phase, count, rate in phases:
                batch = build_messages(count, f"{phase}-{uuid.uuid4().hex[:4]}")
                cpu_before = cpu_snapshot(stack)
                sent = await inject(producer, batch, rate)
                await wait_all(watcher, sent, args.timeout)
                cpu_after = cpu_snapshot(stack)
                # Publish -> the provider accepting the reply (its sent_time), and -> the outcome event.
                done = [watcher.sent_at[r] - sent[r] for r in sent if r in watcher.sent_at]
                first_sent = min(sent.values())
                last = max((watcher.sent_at[r] for r in sent if r in watcher.sent_at), default=first_sent)
                cpu = {k: cpu_after.get(k, 0.0) - v for k, v in cpu_before.items()}
                results[phase] = {"sent": sent, "latencies": done, "seconds": last - first_sent, "cpu": cpu}
        finally:
            await producer.stop()
            await watcher.stop()
        wanted = {r for phase in results.values() for r in phase["sent"]}
        counts = await count_deliveries(f"127.0.0.1:{stack.ports['envoy']}", stack.tokens["staff"], wanted)
        dead = await dlq_count(bootstrap)
    return Measured(base, results, counts, dead, watcher.failed)


def report(name: str, m: Measured, args: argparse.Namespace) -> bool:
    base, results, counts = m.base, m.results, m.counts
    print(f"\n== tracing {name}")
    print(f"broker alone (baseline): p50 {statistics.median(base) * 1000:.1f} ms, p95 {pct(base, 95) * 1000:.1f} ms")
    ok = True
    for phase, r in results.items():
        lat = r["latencies"]
        n = len(r["sent"])
        rate = len(lat) / r["seconds"] if r["seconds"] else 0.0
        lost = n - sum(1 for q in r["sent"] if counts.get(q, 0) >= 1)
        dup = sum(1 for q in r["sent"] if counts.get(q, 0) > 1)
        p50, p95, p99 = (pct(lat, p) if lat else float("nan") for p in (50, 95, 99))
        print(
            f"{phase:<6} {n} messages in {r['seconds']:.1f} s = {rate:.0f} msg/s; publish -> reply sent "
            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
            f"(p50 {p50 / statistics.median(base):.1f}x the broker alone); lost {lost}, duplicated {dup}"
        )
        ok = ok and lost == 0 and dup == 0
        per_msg = ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1]))
        print(f"       CPU ms per message: {per_msg}")
        if phase == "full":
            print(f"       floor p95 <= 1 s at {args.rate:.0f} msg/s: {'met' if p95 <= 1.0 else 'MISSED'}")
        if phase == "burst":
            print(f"       floor >= 100 msg/s drained: {'met' if rate >= 100 else 'MISSED'}")
    print(f"dead-lettered: {m.dead}; delivery failures reported: {m.failed}")
    return ok and m.dead == 0


def summary(phase: str, m: Measured) -> tuple[float, float, float]:
    """(p50 s, msg/s, CPU ms per message over every process) of one phase."""
    r = m.results[phase]
    rate = len(r["latencies"]) / r["seconds"] if r["seconds"] else 0.0
    return statistics.median(r["latencies"]), rate, sum(r["cpu"].values()) / len(r["sent"]) * 1000


async def main(args: argparse.Namespace, state: Path) -> int:
    modes = {"off": False, "on": True} if args.traces == "both" else {args.traces: args.traces == "on"}
    measured = {name: await measure(args, state / name, traces) for name, traces in modes.items()}
    # Every report printed, then judged.
    reports = [report(name, m, args) for name, m in measured.items()]
    ok = all(reports)
    if len(measured) == 2:
        print("\ntracing's cost (on / off, same run):")
        for phase in measured["off"].results:
            (p50_off, rate_off, cpu_off), (p50_on, rate_on, cpu_on) = (summary(phase, measured[n]) for n in modes)
            print(
                f"  {phase:<6} median publish -> reply sent {p50_off * 1000:.0f} -> {p50_on * 1000:.0f} ms "
                f"({p50_on / p50_off:.2f}x); {rate_off:.0f} -> {rate_on:.0f} msg/s ({rate_on / rate_off:.2f}x); "
                f"CPU {cpu_off:.1f} -> {cpu_on:.1f} ms/message ({cpu_on / cpu_off:.2f}x)"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="injection rate of the full phase (msg/s)")
    parser.add_argument("--light-messages", type=int, default=300)
    parser.add_argument("--light-rate", type=float, default=20.0)
    parser.add_argument("--embedding-threads", type=int, default=1, help="knowledge's ONNX threads (0: all cores)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a phase's replies")
    parser.add_argument(
        "--traces", choices=("both", "off", "on"), default="both", help="tracing off, on, or both in turn (default)"
    )
    args = parser.parse_args()
    with scratch_dir("fte-bench-pipeline-") as state_dir:
        sys.exit(asyncio.run(main(args, state_dir)))
