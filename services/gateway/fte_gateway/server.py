"""Serving the app with uvicorn: `serve()` for the process, `GatewayServer` for tests and benches."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Iterator

import uvicorn
from fte_runtime.http_server import uvicorn_config
from fte_runtime.logs import configure_logging
from fte_runtime.metrics import serve_metrics
from fte_runtime.tracing import configure_tracing, shutdown_tracing

from fte_gateway.app import create_app
from fte_gateway.settings import GatewaySettings


def _config(settings: GatewaySettings) -> uvicorn.Config:
    return uvicorn_config(create_app(settings), host=settings.http_host, port=settings.http_port)


# Under load the requests in flight keep more new objects alive than the collector's default
# threshold (700), so it would scan them thousands of times a second, ~5% of the CPU, and find
# nothing: the request path makes no reference cycles. Start-up objects are frozen (see the app).
GC_THRESHOLDS = (10_000, 10, 10)


def serve(settings: GatewaySettings) -> None:
    configure_logging("gateway", settings.log_level, settings.log_json)
    configure_tracing("gateway")
    gc.set_threshold(*GC_THRESHOLDS)
    serve_metrics(settings.metrics_port, settings.http_host)
    try:
        uvicorn.Server(_config(settings)).run()
    finally:
        shutdown_tracing()


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the embedding program owns the signals


class GatewayServer:
    """The gateway inside the current event loop, on `settings.http_port` (0: a free port)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.port = 0
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.port}"

    async def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.http_host, self.settings.http_port))
        self.port = sock.getsockname()[1]
        self._server = _EmbeddedServer(_config(self.settings))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("gateway failed to start")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = None
