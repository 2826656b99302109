"""Serving the streamable-HTTP app with uvicorn (the stack runs it as its own process)."""

from __future__ import annotations

import uvicorn
from fte_runtime.logs import configure_logging
from fte_runtime.metrics import serve_metrics

from fte_mcp.app import create_app
from fte_mcp.settings import McpSettings

SHUTDOWN_GRACE_SECONDS = 10


def serve(settings: McpSettings) -> None:
    configure_logging("mcp", settings.log_level, settings.log_json)
    serve_metrics(settings.metrics_port, settings.http_host)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # our JSON logging, configured once
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        lifespan="on",
    )
    uvicorn.Server(config).run()
