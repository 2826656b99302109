"""ResolveCustomer at a fixed concurrency, for identifiers the service already knows and for new
ones, next to a bare grpc.aio echo of the same RPC measured in the same run.

The identity service runs as `python -m fte_identity serve` on an embedded PostgreSQL (and the
embedded broker for its outbox relay); the echo server is a bare `grpc.aio.server()` answering
ResolveCustomer from the request alone, with no runtime interceptor and no database. Both are
separate processes; the load comes from this process with the same client code for every
scenario. Scenarios are interleaved over several rounds and the median round is reported,
because this machine is shared and noisy.

    .venv/bin/python bench/identity_resolve.py [--seconds 4] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_stack.broker import TansuBroker
from fte_stack.postgres import PostgresServer
from fte_stack.procs import Child, free_port, scratch_dir, wait_for_port

TOKEN = "bench-token"
EMAIL = identity_pb2.IdentifierKind.IDENTIFIER_KIND_EMAIL
Request = identity_service_pb2.ResolveCustomerRequest


class EchoServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    """Answers from the request alone: the cost of gRPC itself."""

    async def ResolveCustomer(
        self, request: identity_service_pb2.ResolveCustomerRequest, context: object
    ) -> identity_service_pb2.ResolveCustomerResponse:
        customer = identity_pb2.Customer(
            name="customers/00000000-0000-0000-0000-000000000000",
            display_name=request.display_name,
            identifiers=[
                identity_pb2.Identifier(kind=i.kind, value=i.value, raw_value=i.value) for i in request.identifiers
            ],
            state=identity_pb2.Customer.STATE_ACTIVE,
        )
        return identity_service_pb2.ResolveCustomerResponse(customer=customer)


async def serve_echo(port: int) -> None:
    server = grpc.aio.server()
    servicer = EchoServicer()  # type: ignore[abstract]  # only ResolveCustomer is exercised
    identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def resolve_request(address: str) -> Request:
    # Authenticated mail (the gateway's DKIM/SPF check passed): the address is proven, so a known
    # one resolves to its customer. An unauthenticated address is only a claim and would make a
    # new customer every time, so "resolve existing" would measure creation.
    return Request(
        channel=common_pb2.Channel.CHANNEL_EMAIL,
        identifiers=[identity_service_pb2.IdentifierInput(kind=EMAIL, value=address)],
        sender_authenticated=True,
    )


async def load(
    stub: identity_service_pb2_grpc.IdentityServiceAsyncStub,
    make: Callable[[], Request],
    seconds: float,
    concurrency: int,
) -> tuple[float, float, float, int]:
    """calls/s, p50 ms, p99 ms, errors."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            request = make()
            started = time.perf_counter()
            try:
                await stub.ResolveCustomer(request, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return len(latencies) / elapsed, p50, p99, errors


async def main(args: argparse.Namespace, root: Path) -> None:
    postgres = PostgresServer(root / "postgres", free_port())
    broker = TansuBroker(free_port(), root / "tansu.log")
    identity_port, echo_port = free_port(), free_port()
    children: list[Child] = []
    channels: list[grpc.aio.Channel] = []
    try:
        await postgres.start()
        await broker.start()
        dsn = await postgres.create_database("bench_identity")
        identity = Child(
            "identity",
            [sys.executable, "-m", "fte_identity", "serve"],
            root / "identity.log",
            env={
                "FTE_IDENTITY_GRPC_PORT": str(identity_port),
                "FTE_IDENTITY_DATABASE_URL": dsn,
                "FTE_IDENTITY_DATABASE_POOL_MAX": "20",
                "FTE_IDENTITY_KAFKA_BOOTSTRAP": broker.bootstrap,
                "FTE_IDENTITY_AUTH_TOKENS": f'{{"{TOKEN}": {{"principal": "bench", "scopes": ["identity.write"]}}}}',
                "FTE_IDENTITY_LOG_LEVEL": "WARNING",
            },
        )
        echo = Child("echo", [sys.executable, __file__, "--serve-echo", str(echo_port)], root / "echo.log")
        children += [identity, echo]
        for child, port in ((identity, identity_port), (echo, echo_port)):
            await wait_for_port(port, 60, child.name, await child.start())

        identity_channel = connect(f"127.0.0.1:{identity_port}", token=TOKEN, default_timeout=10)
        echo_channel = grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}")
        channels += [identity_channel, echo_channel]
        identity_stub = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        echo_stub = identity_service_pb2_grpc.IdentityServiceStub(echo_channel)

        # Customers that already exist, resolved again by a variant spelling of their address.
        known = [f"Known.Customer{n}@Bench.Example" for n in range(args.known)]
        rng = random.Random(7)
        pending = iter(known)

        async def seed() -> None:
            for address in pending:
                await identity_stub.ResolveCustomer(resolve_request(address))

        await asyncio.gather(*(seed() for _ in range(args.concurrency)))
        again = await identity_stub.ResolveCustomer(resolve_request(f"  {known[0].upper()} "))
        if again.created:
            raise SystemExit("a known address made a new customer: 'resolve existing' would measure creation")
        fresh = itertools.count()

        scenarios: dict[str, tuple[identity_service_pb2_grpc.IdentityServiceAsyncStub, Callable[[], Request]]] = {
            "echo (bare grpc.aio)": (echo_stub, lambda: resolve_request(f"  {rng.choice(known).upper()} ")),
            "resolve existing": (identity_stub, lambda: resolve_request(f"  {rng.choice(known).upper()} ")),
            "resolve new": (identity_stub, lambda: resolve_request(f"new{next(fresh)}@bench.example")),
        }
        # Warm up every path once (connections, caches, the pool).
        for stub, make in scenarios.values():
            await load(stub, make, 0.5, args.concurrency)
        results: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):
            for name, (stub, make) in scenarios.items():
                results[name].append(await load(stub, make, args.seconds, args.concurrency))

        def median(name: str, index: int) -> float:
            return statistics.median(r[index] for r in results[name])

        base = "echo (bare grpc.aio)"
        print(f"ResolveCustomer, concurrency {args.concurrency}, {args.rounds} rounds of {args.seconds:.0f} s, medians")
        header = ("calls/s", 10), ("p50 ms", 10), ("p99 ms", 10), ("errors", 8), ("x echo p50", 12)
        print(f"{'scenario':<22}" + "".join(f"{h:>{w}}" for h, w in header) + f"{'echo/this calls/s':>19}")
        for name in scenarios:
            rate, p50, p99 = median(name, 0), median(name, 1), median(name, 2)
            errors = sum(r[3] for r in results[name])
            print(
                f"{name:<22}{rate:>10.0f}{p50:>10.2f}{p99:>10.2f}{errors:>8}"
                f"{p50 / median(base, 1):>12.1f}{median(base, 0) / rate:>19.1f}"
            )
    finally:
        for channel in channels:
            await channel.close()
        for child in children:
            await child.stop(10)
        await broker.stop()
        await postgres.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--known", type=int, default=1000, help="customers created before the run")
    parser.add_argument("--serve-echo", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo))
    else:
        with scratch_dir("fte-bench-identity-") as root:
            asyncio.run(main(args, root))


if __name__ == "__main__":
    cli()
