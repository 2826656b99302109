"""Serving the console with uvicorn (the stack runs it as its own process, like production)."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fte_runtime.http_server import uvicorn_config
from fte_runtime.logs import configure_logging
from fte_runtime.tracing import configure_tracing, shutdown_tracing
from starlette.applications import Starlette

from fte_console.app import create_app
from fte_console.settings import ConsoleSettings


class _Server(uvicorn.Server):
    """On SIGTERM, also ends the open live streams (queue and ticket pages): uvicorn waits for open responses before
    it stops, and an event stream never finishes by itself."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        deps = getattr(self.app.state, "deps", None)
        if deps is not None:
            # A signal handler runs between two steps of the loop: hand the work to the loop.
            asyncio.get_running_loop().call_soon_threadsafe(deps.live.close)
            asyncio.get_running_loop().call_soon_threadsafe(deps.delivery.close)


def serve(settings: ConsoleSettings) -> None:
    configure_logging("console", settings.log_level, settings.log_json)
    configure_tracing("console")
    app = create_app(settings)
    try:
        _Server(uvicorn_config(app, host=settings.http_host, port=settings.http_port), app).run()
    finally:
        shutdown_tracing()
