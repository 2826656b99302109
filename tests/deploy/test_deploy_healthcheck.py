"""The container health probe against a real gRPC server and a real HTTP server."""

from __future__ import annotations

import asyncio
import http.server
import sys
import threading
from collections.abc import Iterator

import pytest
from fte_runtime.grpc_server import GrpcServer
from fte_runtime.settings import GrpcServerSettings


async def probe(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fte_runtime.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip()


async def test_grpc_probe_follows_the_servers_health() -> None:
    server = GrpcServer(GrpcServerSettings(grpc_port=0, shutdown_grace_seconds=0.5), "test.fte", [])
    port = await server.start()
    try:
        assert await probe("--port", str(port)) == (0, "SERVING")
        # A service the server does not know is not healthy.
        code, detail = await probe("--port", str(port), "--service", "fte.nothing.v1.Nothing")
        assert code == 1
        assert "NOT_FOUND" in detail
        # What SIGTERM does first: readiness goes NOT_SERVING while calls still drain.
        await server.health.enter_graceful_shutdown()
        assert await probe("--port", str(port)) == (1, "NOT_SERVING")
    finally:
        await server.stop()
    code, detail = await probe("--port", str(port), "--timeout", "0.5")
    assert code == 1
    assert "UNAVAILABLE" in detail or "DEADLINE_EXCEEDED" in detail


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_http_probe_needs_a_2xx(http_port: int) -> None:
    assert await probe("--port", str(http_port), "--http", "/healthz") == (0, "HTTP 200")
    assert await probe("--port", str(http_port), "--http", "/readyz") == (1, "HTTP 503")
