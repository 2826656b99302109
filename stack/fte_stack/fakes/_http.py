"""A Starlette app served by uvicorn inside the caller's event loop, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Protocol

import uvicorn
from starlette.types import ASGIApp


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals belong to whoever runs the loop, not to an embedded server.
        yield


class LocalHttpServer:
    """Serve `app` on 127.0.0.1 (port 0 = a free port) until `stop()`."""

    def __init__(self, app: ASGIApp, port: int = 0, host: str = "127.0.0.1") -> None:
        self._app = app
        self._host = host
        self._want_port = port
        self.port = 0
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Base URL with a trailing slash, e.g. http://127.0.0.1:40123/."""
        return f"http://{self._host}:{self.port}/"

    async def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._want_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off")
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None


class _Serving(Protocol):
    async def start(self) -> str: ...

    async def stop(self) -> None: ...


def serve_until_interrupted(make: Callable[[], _Serving], what: str) -> None:
    """Run a fake from the command line: start it, print where it listens, serve until Ctrl-C."""

    async def run() -> None:
        fake = make()
        print(f"{what} on {await fake.start()}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
