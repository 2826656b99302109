"""Gateway ingest: signed Twilio WhatsApp webhooks and support-form submits at concurrency 64
against the gateway (uvicorn process, real broker, every request published with acks=all before
it is answered), next to a bare Starlette handler (uvicorn process, reads the body and answers)
in the same run.

Reports req/s, p50 and p99 per target and per kind, and the gateway/baseline throughput ratio.
Floor: ratio >= 0.5 and gateway p99 <= 50 ms. Tracing's cost, same run: a second gateway process
with tracing on (a span per request and per publish, exported over OTLP to a local Jaeger) is
measured after the untraced one; its median, p99, throughput and CPU per request are printed with
the on/off ratios. The load generator is a minimal keep-alive HTTP/1.1
client over asyncio streams with pre-signed requests, so it costs little CPU next to the servers.

    .venv/bin/python bench/gateway_ingest.py [--seconds 20] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from fte_runtime import topics
from fte_runtime.kafka import ensure_topics
from fte_stack.broker import TansuBroker
from fte_stack.jaeger import JaegerServer
from fte_stack.procs import Child, free_port, scratch_dir, wait_for_port
from twilio.request_validator import RequestValidator

TWILIO_TOKEN = "bench-twilio-auth-token"
REQUESTS_PER_KIND = 4000  # distinct pre-built requests, reused round-robin


def serve_baseline(port: int) -> None:
    """A bare Starlette app with the gateway's two ingest routes: read the body, answer."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def whatsapp(request: Request) -> Response:
        await request.form()
        return Response('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', media_type="text/xml")

    async def submit(request: Request) -> Response:
        await request.json()
        return JSONResponse({"reference": "TKT-0000000000", "status_url": "/"}, status_code=202)

    async def ready(request: Request) -> Response:
        return Response("ok")

    app = Starlette(
        routes=[
            Route("/webhooks/whatsapp", whatsapp, methods=["POST"]),
            Route("/support/submit", submit, methods=["POST"]),
            Route("/readyz", ready),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def build_requests(port: int) -> dict[str, list[bytes]]:
    """Pre-built HTTP/1.1 requests: signed WhatsApp webhooks and JSON form submits."""
    validator = RequestValidator(TWILIO_TOKEN)
    url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    out: dict[str, list[bytes]] = {"whatsapp": [], "form": []}
    for i in range(REQUESTS_PER_KIND):
        params = {
            "MessageSid": f"SMbench{os.getpid()}x{i:06d}",
            "AccountSid": "ACbench",
            "From": f"whatsapp:+1415555{i % 10000:04d}",
            "To": "whatsapp:+14155238886",
            "Body": f"Hello, this is benchmark message {i}: where is my order?",
            "WaId": f"1415555{i % 10000:04d}",
            "ProfileName": "Bench",
            "NumMedia": "0",
        }
        body = urllib.parse.urlencode(params).encode()
        sig = validator.compute_signature(url, params)
        out["whatsapp"].append(
            b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (port, sig.encode(), len(body), body)
        )
        form = {
            "name": f"Bench User {i}",
            "email": f"bench{i % 5000}@example.com",
            "subject": "Benchmark request",
            "category": "technical",
            "priority": "medium",
            "message": f"The export button does nothing since yesterday (run {i}).",
        }
        body = json.dumps(form).encode()
        out["form"].append(
            b"POST /support/submit HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body)
        )
    return out


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    per_kind: dict[str, tuple[float, float]]  # kind -> (p50 ms, p99 ms)
    cpu_ms_per_request: float = 0.0


async def load(port: int, seconds: float, concurrency: int, pids: tuple[int, ...] = ()) -> Run:
    requests = build_requests(port)
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[int, int] = defaultdict(int)
    stop_at = 0.0

    async def worker(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        try:
            while time.perf_counter() < stop_at:
                kind = "whatsapp" if i % 2 == 0 else "form"
                pool = requests[kind]
                started = time.perf_counter()
                writer.write(pool[(i // 2) % len(pool)])
                status = await _read_response(reader)
                latencies[kind].append(time.perf_counter() - started)
                statuses[status] += 1
                i += concurrency
        finally:
            writer.close()

    cpu_before = sum(cpu_seconds(p) for p in pids)
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    every = [x for xs in latencies.values() for x in xs]
    return Run(
        requests=len(every),
        rps=len(every) / elapsed,
        p50_ms=statistics.median(every) * 1000,
        p99_ms=statistics.quantiles(every, n=100)[98] * 1000,
        statuses=dict(statuses),
        per_kind={
            kind: (statistics.median(xs) * 1000, statistics.quantiles(xs, n=100)[98] * 1000)
            for kind, xs in latencies.items()
        },
        cpu_ms_per_request=cpu * 1000 / max(len(every), 1),
    )


async def wait_ready(port: int, child: Child) -> None:
    await wait_for_port(port, 60, child.name, child.proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = await _read_response(reader)
        writer.close()
        if status == 200:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{child.name} not ready")


async def main(work: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    broker = TansuBroker(free_port(), work / "tansu.log")
    await broker.start()
    children: list[Child] = []
    try:
        await ensure_topics(broker.bootstrap, topics.ALL)
        jaeger = JaegerServer(work / "jaeger")
        await jaeger.start()
        gw_port, base_port, traced_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "FTE_GATEWAY_HTTP_PORT": str(gw_port),
            "FTE_GATEWAY_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FTE_GATEWAY_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "FTE_GATEWAY_GMAIL_ENABLED": "false",  # Gmail is not on this path; no database needed
            "FTE_GATEWAY_FORM_RATE_PER_MINUTE": "0",  # one client IP sends everything here
            "FTE_GATEWAY_LOG_LEVEL": "WARNING",
        }
        gateway = Child("gateway", [sys.executable, "-m", "fte_gateway", "serve"], work / "gateway.log", env)
        baseline = Child(
            "baseline", [sys.executable, __file__, "--serve-baseline", str(base_port)], work / "baseline.log", env
        )
        traced_env = {
            **env,
            "FTE_GATEWAY_HTTP_PORT": str(traced_port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        }
        traced = Child(
            "gateway-traced", [sys.executable, "-m", "fte_gateway", "serve"], work / "traced.log", traced_env
        )
        children = [gateway, baseline, traced, jaeger.child]
        for child, port in ((gateway, gw_port), (baseline, base_port), (traced, traced_port)):
            await child.start()
            await wait_ready(port, child)

        # A short warm-up of each, then the measured runs, baseline first.
        for port in (base_port, gw_port, traced_port):
            await load(port, 2.0, args.concurrency)
        assert baseline.proc is not None
        assert gateway.proc is not None
        assert traced.proc is not None
        broker_pid = broker.child.proc.pid if broker.child.proc is not None else 0
        broker_before = cpu_seconds(broker_pid) if broker_pid else 0.0
        base = await load(base_port, args.seconds, args.concurrency, (baseline.proc.pid,))
        gw = await load(gw_port, args.seconds, args.concurrency, (gateway.proc.pid,))
        broker_cpu = cpu_seconds(broker_pid) - broker_before if broker_pid else 0.0
        assert jaeger.child.proc is not None
        jaeger_before = cpu_seconds(jaeger.child.proc.pid)
        on = await load(traced_port, args.seconds, args.concurrency, (traced.proc.pid,))
        jaeger_cpu = cpu_seconds(jaeger.child.proc.pid) - jaeger_before
    finally:
        for child in children:
            await child.stop()
        await broker.stop()

    ratio = gw.rps / base.rps
    print(f"gateway ingest, concurrency {args.concurrency}, {args.seconds:.0f} s each, half WhatsApp / half form")
    for name, r in (("bare starlette", base), ("gateway", gw)):
        kinds = ", ".join(f"{k} p50/p99 {a:.1f}/{b:.1f} ms" for k, (a, b) in sorted(r.per_kind.items()))
        print(
            f"  {name:15s} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms  "
            f"server CPU {r.cpu_ms_per_request:.2f} ms/req  ({kinds})  statuses {r.statuses}"
        )
    print(f"  broker CPU during both measured runs: {broker_cpu * 1000 / gw.requests:.2f} ms per gateway request")
    print(f"  ratio gateway/baseline {ratio:.2f} (floor 0.5), gateway p99 {gw.p99_ms:.1f} ms (floor 50 ms)")
    print(
        f"  tracing on: {on.rps:.0f} req/s  p50 {on.p50_ms:.1f} ms  p99 {on.p99_ms:.1f} ms  "
        f"server CPU {on.cpu_ms_per_request:.2f} ms/req  statuses {on.statuses}; "
        f"Jaeger CPU {jaeger_cpu * 1000 / max(on.requests, 1):.2f} ms/req"
    )
    print(
        f"  tracing on/off: throughput {on.rps / gw.rps:.2f}x, median {on.p50_ms / gw.p50_ms:.2f}x, "
        f"p99 {on.p99_ms / gw.p99_ms:.2f}x, "
        f"gateway CPU per request {on.cpu_ms_per_request / gw.cpu_ms_per_request:.2f}x"
    )
    ok_statuses = set(gw.statuses) <= {200, 202} and set(on.statuses) <= {200, 202}
    if not ok_statuses:
        print("  FAIL: the gateway answered something other than 200/202")
    return 0 if ok_statuses and ratio >= 0.5 and gw.p99_ms <= 50 else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-baseline":
        serve_baseline(int(sys.argv[2]))
    else:
        with scratch_dir("fte-bench-gateway-") as work:
            sys.exit(asyncio.run(main(work)))
