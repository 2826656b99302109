"""Pages and actions for admins only (the dead-letter queues, traces): an `agent` gets 403. Also
the helpers every page module outside `app` renders and calls the mesh with.

Built on the console's sessions and CSRF tokens (fte_console.app), which are looked up when a
request comes, so this module and the app can name each other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from fte_console import app as web
from fte_console.accounts import Role, Session

Page = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, FormData], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def deps(request: Request) -> web.Deps:
    return web._deps(request)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return web._render(request, template, status, **context)


async def call(call: Awaitable[Any], what: str) -> Any:
    """A mesh call's answer, its error as the page's (404, 409 or 502 with a reason)."""
    return await web._call(call, what)


def text(message: str, status: int) -> Response:
    return PlainTextResponse(message, status_code=status, headers=web.HEADERS)


def _refused(session: Session) -> Response | None:
    if session.user.role is not Role.ADMIN:
        return text("only an admin may open this page", 403)
    return None


def admin_page(handler: Page) -> Endpoint:
    """A page for signed-in admins: without a session, the sign-in page; any other role, 403."""

    async def endpoint(request: Request) -> Response:
        session = await web._session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303, headers=web.HEADERS)
        return _refused(session) or await handler(request, session)

    return endpoint


def admin_action(max_fields: int) -> Callable[[Action], Endpoint]:
    """A form POST of signed-in admins: 401 without a session, 403 without its CSRF token or for
    any other role. Up to `max_fields` form fields (a list of checkboxes is one field each)."""

    def wrap(handler: Action) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            session = await web._session(request)
            if session is None:
                return text("sign in first", 401)
            if int(request.headers.get("content-length") or 0) > web.MAX_FORM_BYTES:
                raise HTTPException(413, "the form is too large")
            form = await request.form(max_files=0, max_fields=max_fields)
            if not web._same(str(form.get("csrf_token", "")), session.csrf_token):
                return text("the form's CSRF token is missing or wrong; reload the page", 403)
            return _refused(session) or await handler(request, session, form)

        return endpoint

    return wrap
