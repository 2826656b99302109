"""`python -m fte_stack run [--traces]`: the whole system on this machine, no credentials, no Docker
(`--traces`: with Jaeger, every service and Envoy tracing into it).
`python -m fte_stack outbox`: what its provider fakes received (the replies customers got).
`python -m fte_stack trace --correlation-id ID | --trace-id ID`: one message's trace as a tree."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from fte_runtime.logs import configure_logging
from fte_runtime.trace_query import find_trace_id, get_trace, render_tree
from fte_runtime.tracing import CORRELATION_ATTRIBUTE

from fte_stack.outbox import show
from fte_stack.stack import DEFAULT_PORTS, Stack, StackConfig

REPO = Path(__file__).resolve().parents[2]


async def run(state_dir: Path, *, traces: bool = False) -> None:
    stack = Stack(StackConfig.for_local_run(state_dir, traces=traces))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack:
        p = stack.ports
        print("\nThe fte stack is running. Ctrl-C stops it; the data stays in", state_dir)
        print(f"  web support form   http://127.0.0.1:{p['gateway']}/support")
        print(f"  gateway API docs   http://127.0.0.1:{p['gateway']}/openapi.json")
        print(
            f"  staff console      http://127.0.0.1:{p['console']}/   "
            f"(user admin, password in {state_dir / 'console-admin-password'})"
        )
        print(
            f"  MCP (assistants)   http://127.0.0.1:{p['mcp']}/mcp   (a bearer token from tokens.json; "
            "docs/apis/mcp.md)"
        )
        print(f"  gateway metrics    http://127.0.0.1:{p['gateway-metrics']}/metrics")
        print(f"  gRPC (via Envoy)   127.0.0.1:{p['envoy']}   (Envoy admin http://127.0.0.1:{p['envoy-admin']})")
        for spec in stack.specs:
            if spec.kind == "grpc":
                metrics = f"http://127.0.0.1:{p[spec.name + '-metrics']}/metrics"
                print(f"  {spec.name:<18} 127.0.0.1:{p[spec.name]}   metrics {metrics}")
        print(
            f"  PostgreSQL         {stack.postgres.dsn().split('@')[1]}  (password in {stack.postgres.password_file})"
        )
        print(f"  Kafka              {stack.kafka_bootstrap}")
        print(
            "  replies sent       python -m fte_stack outbox   "
            f"(fake Twilio :{p['fake-twilio']}, fake Gmail :{p['fake-gmail']})"
        )
        if stack.jaeger is not None:
            print(f"  trace UI           http://127.0.0.1:{p['console']}/traces   (console admins; by correlation id)")
            print(
                f"  traces (Jaeger)    {stack.jaeger.ui_url}/api/traces   (OTLP in {stack.jaeger.otlp_endpoint}; "
                "python -m fte_stack trace --correlation-id ID)"
            )
        print(f"  tokens             {state_dir / 'tokens.json'}   (their scopes: {state_dir / 'auth-tokens.json'})")
        print(f"  logs               {state_dir}/*.log\n", flush=True)
        await stop.wait()
        print("stopping...", flush=True)


def print_trace(jaeger_url: str, trace_id: str | None, correlation_id: str | None) -> int:
    if correlation_id:
        trace_id = find_trace_id(jaeger_url, correlation_id)
        if trace_id is None:
            print(f"no trace with {CORRELATION_ATTRIBUTE}={correlation_id} in {jaeger_url}")
            return 1
    assert trace_id is not None
    trace = get_trace(jaeger_url, trace_id)
    if trace is None:
        print(f"no trace {trace_id} in {jaeger_url}")
        return 1
    print(render_tree(trace))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="fte-stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="start everything and wait for Ctrl-C")
    run_cmd.add_argument("--state-dir", type=Path, default=REPO / ".local" / "stack")
    run_cmd.add_argument(
        "--traces", action="store_true", help="start Jaeger and trace every service and Envoy into it (UI URL printed)"
    )
    outbox_cmd = sub.add_parser("outbox", help="what the running stack's provider fakes received")
    outbox_cmd.add_argument("--json", action="store_true", help="one JSON list instead of text")
    trace_cmd = sub.add_parser("trace", help="print one trace of the running stack (make run TRACES=1) as a tree")
    which = trace_cmd.add_mutually_exclusive_group(required=True)
    which.add_argument("--trace-id", help="a log line's trace_id")
    which.add_argument("--correlation-id", help="a log line's correlation_id (or a response's x-correlation-id)")
    trace_cmd.add_argument("--jaeger", default=f"http://127.0.0.1:{DEFAULT_PORTS['jaeger-ui']}", help="query API URL")
    args = parser.parse_args()
    if args.command == "trace":
        raise SystemExit(print_trace(args.jaeger, args.trace_id, args.correlation_id))
    if args.command == "outbox":
        print(show(DEFAULT_PORTS["fake-twilio"], DEFAULT_PORTS["fake-gmail"], as_json=args.json))
        return
    configure_logging("stack", "INFO", json_lines=False)
    logging.getLogger("fte.stack").setLevel(logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.state_dir, traces=args.traces))


if __name__ == "__main__":
    main()
