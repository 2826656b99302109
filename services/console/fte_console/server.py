"""Serving the console with uvicorn (the stack runs it as its own process, like production)."""

from __future__ import annotations

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
