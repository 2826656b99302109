"""Serving the streamable-HTTP app with uvicorn (the stack runs it as its own process)."""

from __future__ import annotations

import uvicorn
from fte_runtime.http_server import uvicorn_config
from fte_runtime.logs import configure_logging
from fte_runtime.metrics import serve_metrics

from fte_mcp.app import create_app
from fte_mcp.settings import McpSettings


def serve(settings: McpSettings) -> None:
    configure_logging("mcp", settings.log_level, settings.log_json)
    serve_metrics(settings.metrics_port, settings.http_host)
    uvicorn.Server(uvicorn_config(create_app(settings), host=settings.http_host, port=settings.http_port)).run()
