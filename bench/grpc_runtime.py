"""Unary gRPC calls through the full service runtime vs a bare grpc.aio server, and through Envoy
vs direct, measured in the same run.

Each server runs in its own process (as in production). The load comes from ghz (a Go gRPC load
tool, installed into .local/bin with `go install` when Go is available) or, without it, from this
process with a fixed number of concurrent callers; the report names the client used. Scenarios
are interleaved over several rounds and the median round is reported, because this machine is
shared and noisy.

    .venv/bin/python bench/grpc_runtime.py [--seconds 4] [--rounds 3] [--concurrency 32]
                                           [--client auto|ghz|python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration
from fte_runtime.logs import configure_logging
from fte_runtime.settings import GrpcServerSettings, TokenGrant
from fte_stack.envoy import EnvoyProxy
from fte_stack.procs import Child, free_port, scratch_dir, wait_for_port

REPO = Path(__file__).resolve().parent.parent
GHZ_VERSION = "v0.120.0"
TOKEN = "bench-token"
SERVICE = "fte.knowledge.v1.KnowledgeService"


class EchoServicer(knowledge_service_pb2_grpc.KnowledgeServiceServicer):
    async def GetArticle(
        self, request: knowledge_service_pb2.GetArticleRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> knowledge_service_pb2.GetArticleResponse:
        return knowledge_service_pb2.GetArticleResponse(article=knowledge_pb2.Article(name=request.name, title="t"))


async def serve(mode: str, port: int) -> None:
    servicer = EchoServicer()  # type: ignore[abstract]  # only GetArticle is exercised
    if mode == "bare":
        server = grpc.aio.server()
        knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
        return
    configure_logging("bench", "INFO")
    settings = GrpcServerSettings(
        grpc_port=port, auth_tokens={TOKEN: TokenGrant(principal="bench", scopes=["kb.read"])}
    )
    runtime = GrpcServer(
        settings,
        "knowledge.fte",
        [
            ServiceRegistration(
                SERVICE,
                servicer,
                knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server,
                {"GetArticle": "kb.read"},
            )
        ],
    )
    await runtime.start()
    await runtime.server.wait_for_termination()


async def load(target: str, seconds: float, concurrency: int, token: str | None) -> tuple[float, float, float]:
    """calls/s, p50 ms, p99 ms."""
    latencies: list[float] = []
    async with connect(target, token=token, default_timeout=10) as channel:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        request = knowledge_service_pb2.GetArticleRequest(name="articles/reset-password")
        for _ in range(200):  # warm up connections and caches
            await stub.GetArticle(request)
        stop_at = time.perf_counter() + seconds

        async def caller() -> None:
            while (now := time.perf_counter()) < stop_at:
                await stub.GetArticle(request)
                latencies.append(time.perf_counter() - now)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def find_ghz() -> str | None:
    local = REPO / ".local" / "bin" / "ghz"
    if local.exists():
        return str(local)
    if found := shutil.which("ghz"):
        return found
    if shutil.which("go") is None:
        return None
    print(f"installing ghz {GHZ_VERSION} into .local/bin ...", flush=True)
    result = subprocess.run(
        ["go", "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"],
        env={**os.environ, "GOBIN": str(local.parent)},
        capture_output=True,
        check=False,
    )
    return str(local) if result.returncode == 0 and local.exists() else None


async def load_ghz(
    ghz: str, target: str, seconds: float, concurrency: int, token: str | None
) -> tuple[float, float, float]:
    argv = [
        ghz, "--insecure", "--import-paths", str(REPO / "protos"),
        "--proto", str(REPO / "protos/fte/knowledge/v1/knowledge_service.proto"),
        "--call", f"{SERVICE}.GetArticle", "-d", json.dumps({"name": "articles/reset-password"}),
        "-c", str(concurrency), "-z", f"{seconds}s", "--format", "json", target,
    ]  # fmt: skip
    if token:
        argv[1:1] = ["--metadata", json.dumps({"authorization": f"Bearer {token}"})]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    report = json.loads(out)
    pct = {p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    return float(report["rps"]), pct.get(50, 0.0), pct.get(99, 0.0)


async def main(args: argparse.Namespace, state: Path) -> None:
    ghz = find_ghz() if args.client in ("auto", "ghz") else None
    if args.client == "ghz" and ghz is None:
        raise SystemExit("ghz is not available and could not be installed (needs Go)")
    ports = {"bare": free_port(), "runtime": free_port()}
    children = {
        mode: Child(mode, [sys.executable, __file__, "--serve", mode, "--port", str(port)], state / f"{mode}.log")
        for mode, port in ports.items()
    }
    for mode, child in children.items():
        proc = await child.start()
        await wait_for_port(ports[mode], 30, mode, proc)
    envoy = EnvoyProxy(free_port(), free_port(), {"knowledge": ports["runtime"]}, state)
    await envoy.start()
    scenarios = {
        "bare grpc.aio": (f"127.0.0.1:{ports['bare']}", None),
        "runtime (auth, metrics, errors)": (f"127.0.0.1:{ports['runtime']}", TOKEN),
        "runtime via Envoy": (envoy.target, TOKEN),
    }
    try:
        await asyncio.sleep(3)  # Envoy's first active health check
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):
            for name, (target, token) in scenarios.items():
                if ghz:
                    results[name].append(await load_ghz(ghz, target, args.seconds, args.concurrency, token))
                else:
                    results[name].append(await load(target, args.seconds, args.concurrency, token))
    finally:
        await envoy.stop()
        for child in children.values():
            await child.stop(5)

    client = "ghz" if ghz else "python grpc.aio client"
    print(
        f"\nunary GetArticle via {client}, concurrency {args.concurrency}, {args.rounds} rounds x {args.seconds:.0f}s"
    )
    print(f"{'scenario':<30}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    medians: dict[str, tuple[float, float, float]] = {}
    for name, rounds in results.items():
        medians[name] = (
            statistics.median(r[0] for r in rounds),
            statistics.median(r[1] for r in rounds),
            statistics.median(r[2] for r in rounds),
        )
        rate, p50, p99 = medians[name]
        print(f"{name:<30}{rate:>10.0f}{p50:>10.2f}{p99:>10.2f}")
    bare, runtime, envoy_ = (medians[n][0] for n in scenarios)
    print(f"\nruntime / bare throughput:  {runtime / bare:.2f}  (floor 0.70)")
    print(f"Envoy / direct throughput:  {envoy_ / runtime:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=["bare", "runtime"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client", choices=["auto", "ghz", "python"], default="auto")
    cli = parser.parse_args()
    if cli.serve:
        asyncio.run(serve(cli.serve, cli.port))
    else:
        with scratch_dir("fte-bench-grpc-") as state:
            asyncio.run(main(cli, state))
