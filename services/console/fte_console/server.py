"""Serving the console with uvicorn: `serve()` for the process, `ConsoleServer` for tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fte_runtime.logs import configure_logging

from fte_console.app import create_app
from fte_console.settings import ConsoleSettings


def _config(settings: ConsoleSettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def serve(settings: ConsoleSettings) -> None:
    configure_logging("console", settings.log_level, settings.log_json)
    uvicorn.Server(_config(settings)).run()


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the embedding program owns the signals


class ConsoleServer:
    """The console inside the current event loop, on `settings.http_port` (0: a free port)."""

    def __init__(self, settings: ConsoleSettings) -> None:
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
                raise RuntimeError("console failed to start")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
