"""What every local OpenAI-compatible fake shares: the server under /v1, kept request bodies,
injected failures, and the admin routes to read and drive them."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fte_stack.fakes._http import LocalHttpServer


class FakeOpenAIEndpoint:
    """Subclasses add their API routes; `_take(request)` keeps the body and answers an injected
    failure when one is due."""

    def __init__(self, routes: list[Route], port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self._failures: list[int] = []
        self._server = LocalHttpServer(
            Starlette(
                routes=[
                    *routes,
                    Route("/_admin/requests", self._admin_requests, methods=["GET"]),
                    Route("/_admin/fail", self._admin_fail, methods=["POST"]),
                ]
            ),
            port=port,
        )

    @property
    def base_url(self) -> str:
        """The base URL the openai client takes, ending in /v1."""
        return f"{self._server.url}v1"

    async def start(self) -> str:
        await self._server.start()
        return self.base_url

    async def stop(self) -> None:
        await self._server.stop()

    def fail_next(self, count: int, status: int = 500) -> None:
        self._failures.extend([status] * count)

    async def _take(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        if self._failures:
            status = self._failures.pop(0)
            error = {"error": {"message": "injected failure", "type": "server_error"}}
            return body, JSONResponse(error, status_code=status)
        return body, None

    async def _admin_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def _admin_fail(self, request: Request) -> Response:
        body = await request.json()
        self.fail_next(int(body.get("count", 1)), int(body.get("status", 500)))
        return JSONResponse({"failing": len(self._failures)})
