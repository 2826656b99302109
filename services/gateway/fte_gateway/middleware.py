"""Pure-ASGI middleware (cheap on the hot path): correlation id, body limit, metrics."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from fte_runtime import tracing
from fte_runtime.context import CORRELATION_HEADER, correlation_id_var, new_correlation_id
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fte_gateway.metrics import HTTP_LATENCY, HTTP_REQUESTS, REJECTED

_VALID_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CORRELATION_HEADER = CORRELATION_HEADER.encode()


class BodyTooLarge(Exception):
    pass


_ROUTE_CACHE_MAX = 4096
# Probes are not traced: they would bury the traces of real work.
_UNTRACED_ROUTES = frozenset({"/healthz", "/readyz"})


def _route_of(router: Router, scope: Scope, cache: dict[tuple[str, str], str]) -> str:
    """The route template (a bounded metrics label) of a request; cached per method and path."""
    key = (scope["method"], scope["path"])
    found = cache.get(key)
    if found is None:
        found = "unmatched"
        for route in router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                found = str(getattr(route, "path", "other"))
                break
        if len(cache) < _ROUTE_CACHE_MAX:
            cache[key] = found
    return found


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, router: Router, max_body_bytes: int) -> None:
        self.app = app
        self.router = router
        self.max_body_bytes = max_body_bytes
        self._routes: dict[tuple[str, str], str] = {}
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_of(self.router, scope, self._routes)
        if not tracing.enabled() or route in _UNTRACED_ROUTES:
            await self._handle(scope, receive, send, route)
            return
        # The root of a customer message's trace (or a child of the caller's `traceparent`). One
        # span of our own here costs a fraction of the generic ASGI instrumentation's (bench/gateway_ingest.py).
        with tracing.http_server_span(scope["method"], route, scope["headers"]) as status:
            assert status is not None

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status(message["status"])
                await send(message)

            await self._handle(scope, receive, send_traced, route)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        started = time.perf_counter()
        length = supplied = None
        for name, value in scope["headers"]:  # one pass, no dict of every header
            if name == b"content-length":
                length = value
            elif name == _CORRELATION_HEADER:
                supplied = value
        cid = supplied.decode("latin-1") if supplied is not None else ""
        if not _VALID_CORRELATION.match(cid):
            cid = new_correlation_id()
        token = correlation_id_var.set(cid)
        tracing.tag_correlation(cid)
        cid_header = (_CORRELATION_HEADER, cid.encode())
        code, response_started = 500, False

        async def send_wrapper(message: Message) -> None:
            nonlocal code, response_started
            if message["type"] == "http.response.start":
                code, response_started = message["status"], True
                message["headers"] = [*message.get("headers", ()), cid_header]
            await send(message)

        try:
            if length is not None:
                if not length.isdigit() or int(length) > self.max_body_bytes:
                    await self._too_large(route, send_wrapper)
                    return
                # The server frames the body by Content-Length: it cannot grow past the checked value.
                app_receive = receive
            else:
                app_receive = self._limited(receive)
            try:
                await self.app(scope, app_receive, send_wrapper)
            except BodyTooLarge:
                if not response_started:
                    await self._too_large(route, send_wrapper)
        finally:
            correlation_id_var.reset(token)
            self._observe(route, scope["method"], code, time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        """`receive` for a body without Content-Length (chunked): counted as it streams in."""
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        return limited_receive

    def _observe(self, route: str, method: str, code: int, seconds: float) -> None:
        # Label lookups take a lock each; keep the children (routes are a bounded set).
        key = (route, method, code)
        children = self._metrics.get(key)
        if children is None:
            children = (HTTP_REQUESTS.labels(route, method, str(code)), HTTP_LATENCY.labels(route))
            if len(self._metrics) < _ROUTE_CACHE_MAX:
                self._metrics[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def _too_large(self, route: str, send: Any) -> None:
        REJECTED.labels(route, "body_too_large").inc()
        body = json.dumps({"error": "request body too large", "limit_bytes": self.max_body_bytes}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
