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
from fte_stack.envoy import ENVOY_CONFIG, EnvoyProxy, envoy_binary, render_config
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
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    expected = {"knowledge": 50051, "identity": 50052, "notifier": 50053, "agent": 50054}
    assert set(routes) == set(clusters) == set(expected)
    for name, port in expected.items():
        route = routes[name]["route"]
        assert route["timeout"]
        assert "unavailable" in route["retry_policy"]["retry_on"].split(",")
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


async def test_envoy_routes_grpc_and_follows_upstream_health(envoy: EnvoyProxy, upstream: GrpcServer) -> None:
    # HTTP/1.1 probe and HTTP/2 gRPC on the same listener.
    assert await asyncio.to_thread(healthz, envoy.listen_port) == 200
    # The upstream has no such method registered: UNIMPLEMENTED proves the call crossed Envoy.
    assert await wait_for_code(envoy.target, grpc.StatusCode.UNIMPLEMENTED, 10) == grpc.StatusCode.UNIMPLEMENTED
    # A draining upstream answers NOT_SERVING: Envoy's active check takes it out of rotation.
    await upstream.health.set(KNOWLEDGE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await wait_for_code(envoy.target, grpc.StatusCode.UNAVAILABLE, 15) == grpc.StatusCode.UNAVAILABLE
    await upstream.health.set(KNOWLEDGE, health_pb2.HealthCheckResponse.SERVING)
    assert await wait_for_code(envoy.target, grpc.StatusCode.UNIMPLEMENTED, 15) == grpc.StatusCode.UNIMPLEMENTED
