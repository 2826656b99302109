"""The one uvicorn configuration of the HTTP services (gateway, console, MCP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

# Requests in flight get this long to finish after SIGTERM before uvicorn closes them.
SHUTDOWN_GRACE_SECONDS = 10


def uvicorn_config(app: Callable[..., Any], *, host: str, port: int) -> uvicorn.Config:
    """uvicorn for one of our apps on host:port.

    - log_config None: our JSON logging, configured once by the service, is not replaced;
      no access log (the apps log requests themselves, without bodies or addresses).
    - proxy_headers off: X-Forwarded-* are handled per route by the app, trusted only from the
      configured proxies, never wholesale by the server.
    - no Server header; lifespan on, so the app opens and closes its clients with the server.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        lifespan="on",
    )
