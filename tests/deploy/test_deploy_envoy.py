"""deploy/envoy/envoy.yaml: Envoy accepts it as checked in and as the local stack renders it, and
the running proxy routes gRPC, answers its own /healthz and follows the upstream's gRPC health."""

from __future__ import annotations

import asyncio
import http.client
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio
import yaml
from fte_runtime.grpc_server import GrpcServer
from fte_runtime.settings import GrpcServerSettings
from fte_stack.envoy import COLLECTOR_CLUSTER, ENVOY_CONFIG, EnvoyProxy, envoy_binary, render_config
from fte_stack.procs import free_port
from grpc_health.v1 import health_pb2

KNOWLEDGE = "fte.knowledge.v1.KnowledgeService"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_checked_in_config_validates() -> None:
    result = validate(ENVOY_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_rendered_local_config_validates(tmp_path: Path) -> None:
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(yaml.safe_dump(render_config(free_port(), free_port(), {"knowledge": 50051})))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_exports_spans_to_the_collector_only_when_given_one(tmp_path: Path) -> None:
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    tracer = hcm["tracing"]["provider"]
    assert tracer["name"] == "envoy.tracers.opentelemetry"
    assert tracer["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == COLLECTOR_CLUSTER
    assert COLLECTOR_CLUSTER in {c["name"] for c in config["static_resources"]["clusters"]}

    off = render_config(free_port(), free_port(), {"knowledge": 50051})
    off_hcm = off["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "tracing" not in off_hcm
    assert COLLECTOR_CLUSTER not in {c["name"] for c in off["static_resources"]["clusters"]}

    otlp = free_port()
    on = render_config(free_port(), free_port(), {"knowledge": 50051}, otlp)
    [collector] = [c for c in on["static_resources"]["clusters"] if c["name"] == COLLECTOR_CLUSTER]
    endpoint = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": otlp}
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(yaml.safe_dump(on))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_broken_config_is_rejected(tmp_path: Path) -> None:
    # The check above can fail: a route to a cluster that does not exist is refused.
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    del config["static_resources"]["clusters"][0]
    broken = tmp_path / "envoy.yaml"
    broken.write_text(yaml.safe_dump(config))
    assert validate(broken).returncode != 0


def test_every_grpc_service_has_a_guarded_route_and_cluster() -> None:
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["route"]["cluster"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"] if c["name"] != COLLECTOR_CLUSTER}
    expected = {"knowledge": 50051, "identity": 50052, "notifier": 50053, "agent": 50054}
    assert set(routes) == set(clusters) == set(expected)
    for name, port in expected.items():
        route = routes[name]["route"]
        assert route["timeout"]
        # Only what never reached a pod: an answered call is the caller's channel's to retry, so
        # attempts do not multiply (fte_client.v1.channel), and a mutation is never sent twice.
        assert set(route["retry_policy"]["retry_on"].split(",")) == {
            "connect-failure",
            "refused-stream",
            "reset-before-request",
        }
        cluster = clusters[name]
        assert cluster["circuit_breakers"]["thresholds"]
        assert cluster["outlier_detection"]
        check = cluster["health_checks"][0]
        assert check["grpc_health_check"]["service_name"] == f"fte.{name}.v1.{name.capitalize()}Service"
        # The local stack rewrites exactly one endpoint per cluster.
        [group] = cluster["load_assignment"]["endpoints"]
        [endpoint] = group["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {"address": name, "port_value": port}
    assert hcm["access_log"]


@pytest_asyncio.fixture(loop_scope="session")
async def upstream() -> AsyncIterator[GrpcServer]:
    server = GrpcServer(GrpcServerSettings(grpc_port=0, shutdown_grace_seconds=0.5), "knowledge.fte", [])
    await server.start()
    await server.health.set(KNOWLEDGE, health_pb2.HealthCheckResponse.SERVING)
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def envoy(upstream: GrpcServer, tmp_path: Path) -> AsyncIterator[EnvoyProxy]:
    proxy = EnvoyProxy(free_port(), free_port(), {"knowledge": upstream.port}, tmp_path)
    await proxy.start()
    yield proxy
    await proxy.stop()


def healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


async def call_knowledge(target: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{KNOWLEDGE}/GetArticle")
        try:
            await method(b"", timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def wait_for_code(target: str, want: grpc.StatusCode, seconds: float) -> grpc.StatusCode:
    code = await call_knowledge(target)
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while code != want and loop.time() < until:
        await asyncio.sleep(0.2)
        code = await call_knowledge(target)
    return code


def upstream_health_flags(admin_port: int) -> str:
    """The `health_flags` Envoy's admin API reports for the knowledge upstream."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/clusters")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    flags = [
        line.rsplit("::", 1)[-1]
        for line in body.splitlines()
        if line.startswith("knowledge::") and "::health_flags::" in line
    ]
    assert len(flags) == 1, body
    return flags[0]


async def wait_for_flags(admin_port: int, want: str, seconds: float) -> str:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    flags = await asyncio.to_thread(upstream_health_flags, admin_port)
    while flags != want and loop.time() < until:
        await asyncio.sleep(0.2)
        flags = await asyncio.to_thread(upstream_health_flags, admin_port)
    return flags


async def test_envoy_routes_grpc_and_follows_upstream_health(envoy: EnvoyProxy, upstream: GrpcServer) -> None:
    # HTTP/1.1 probe and HTTP/2 gRPC on the same listener.
    assert await asyncio.to_thread(healthz, envoy.listen_port) == 200
    # The upstream has no such method registered: UNIMPLEMENTED proves the call crossed Envoy.
    assert await wait_for_code(envoy.target, grpc.StatusCode.UNIMPLEMENTED, 10) == grpc.StatusCode.UNIMPLEMENTED
    assert await wait_for_flags(envoy.admin_port, "healthy", 10) == "healthy"
    # A draining upstream answers NOT_SERVING: Envoy's active gRPC check marks it failed
    # (with more pods, calls go to the others), and takes it back once it serves again.
    await upstream.health.set(KNOWLEDGE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await wait_for_flags(envoy.admin_port, "/failed_active_hc", 15) == "/failed_active_hc"
    await upstream.health.set(KNOWLEDGE, health_pb2.HealthCheckResponse.SERVING)
    assert await wait_for_flags(envoy.admin_port, "healthy", 15) == "healthy"
    assert await call_knowledge(envoy.target) == grpc.StatusCode.UNIMPLEMENTED
