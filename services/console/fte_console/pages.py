"""What every page module renders and calls the mesh with, and the guards of its endpoints: a
staff page or action needs a session (and a POST its CSRF token); an admin page or action also
the admin role, any other role gets 403."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jinja2
from fte.agent.v1 import agent_service_pb2_grpc
from fte.identity.v1 import identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte_runtime.ratelimit import RateLimiter
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from fte_console.accounts import Accounts, Role, Session
from fte_console.delivery import DeliveryFeed
from fte_console.live import LiveFeed
from fte_console.settings import ConsoleSettings

SESSION_COOKIE = "fte_console_session"
MAX_FORM_BYTES = 64 * 1024
HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Page = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, FormData], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Deps:
    settings: ConsoleSettings
    accounts: Accounts
    agent: agent_service_pb2_grpc.AgentServiceAsyncStub
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub
    knowledge: knowledge_service_pb2_grpc.KnowledgeServiceAsyncStub
    limiter: RateLimiter
    templates: jinja2.Environment
    live: LiveFeed
    delivery: DeliveryFeed


def deps(request: Request) -> Deps:
    found: Deps = request.app.state.deps
    return found


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = deps(request).templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def text(message: str, status: int) -> Response:
    return PlainTextResponse(message, status_code=status, headers=HEADERS)


async def session(request: Request) -> Session | None:
    return await deps(request).accounts.session(request.cookies.get(SESSION_COOKIE, ""))


async def form(request: Request, max_fields: int = 20) -> FormData:
    """The POSTed form, or 413 past MAX_FORM_BYTES; up to `max_fields` fields (a list of
    checkboxes is one field each)."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise HTTPException(413, "the form is too large")
    return await request.form(max_files=0, max_fields=max_fields)


def same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


async def call(answer: Awaitable[Any], what: str = "ticket") -> Any:
    """A mesh call's answer, its error as the page's (404, 409 or 502 with a reason)."""
    try:
        return await answer
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise HTTPException(404, f"no such {what}") from exc
        if exc.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.ABORTED,
        ):
            raise HTTPException(409, exc.details() or f"the {what} changed; reload it") from exc
        raise HTTPException(502, f"the {what} service did not answer; try again") from exc


def _not_admin(signed_in: Session) -> Response | None:
    if signed_in.user.role is not Role.ADMIN:
        return text("only an admin may open this page", 403)
    return None


def staff_page(handler: Page) -> Endpoint:
    """A page for signed-in staff: without a session, the sign-in page."""

    async def endpoint(request: Request) -> Response:
        signed_in = await session(request)
        if signed_in is None:
            return RedirectResponse("/login", status_code=303, headers=HEADERS)
        return await handler(request, signed_in)

    return endpoint


def admin_page(handler: Page) -> Endpoint:
    """A page for signed-in admins: without a session, the sign-in page; any other role, 403."""

    async def checked(request: Request, signed_in: Session) -> Response:
        return _not_admin(signed_in) or await handler(request, signed_in)

    return staff_page(checked)


def staff_action(handler: Action, max_fields: int = 20) -> Endpoint:
    """A form POST of signed-in staff: 401 without a session, 403 without its CSRF token."""

    async def endpoint(request: Request) -> Response:
        signed_in = await session(request)
        if signed_in is None:
            return text("sign in first", 401)
        posted = await form(request, max_fields)
        if not same(str(posted.get("csrf_token", "")), signed_in.csrf_token):
            return text("the form's CSRF token is missing or wrong; reload the page", 403)
        return await handler(request, signed_in, posted)

    return endpoint


def admin_action(max_fields: int) -> Callable[[Action], Endpoint]:
    """A form POST of signed-in admins: as `staff_action`, and 403 for any other role."""

    def wrap(handler: Action) -> Endpoint:
        async def checked(request: Request, signed_in: Session, posted: FormData) -> Response:
            return _not_admin(signed_in) or await handler(request, signed_in, posted)

        return staff_action(checked, max_fields)

    return wrap
