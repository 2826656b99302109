"""The console's pages and actions (Starlette, Jinja2 with autoescaping).

Every page but the sign-in page needs a session; every POST carries the session's CSRF token
(the sign-in form a double-submit cookie). Tickets are read and changed only through
AgentService, with the console's own token; what each staff member did is in the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

import grpc
import jinja2
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte_runtime.db import create_pool, migrate
from fte_runtime.enums import value_names
from fte_runtime.grpc_client import connect
from fte_runtime.ratelimit import RateLimiter
from fte_runtime.topics import DELIVERY_OUTCOMES
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fte_console import customers, dashboard, deadletters, delivery, oidc, pages, queue, traces, verify
from fte_console.accounts import SCHEMA, Accounts, Role, Session, SignIn
from fte_console.live import LiveFeed, run_feed
from fte_console.pages import HEADERS, SESSION_COOKIE, Deps, staff_action, staff_page
from fte_console.queue import BadFilter, Filters
from fte_console.settings import ConsoleSettings

LOGIN_CSRF_COOKIE = "fte_console_login"
_TICKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
MAX_REPLY = 5000
MAX_NOTE = 5000
AUTHORS = value_names(agent_pb2.Author)
DELIVERY = value_names(common_pb2.DeliveryStatus)
# What staff may escalate a ticket for, by name ("refund" -> ESCALATION_REASON_REFUND).
ESCALATION_REASONS = {name: value for value, name in queue.REASONS.items()}


# -- sign-in ---------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    return _login_form(request)


def _login_form(request: Request, status: int = 200, error: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    settings = pages.deps(request).settings
    response = pages.render(
        request, "login.html", status, csrf_token=token, error=error,
        oidc=oidc.enabled(settings), password=settings.password_sign_in,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
        secure=pages.deps(request).settings.cookie_secure,
    )  # fmt: skip
    return response


async def login(request: Request) -> Response:
    deps = pages.deps(request)
    client = request.client.host if request.client else ""
    wait = deps.limiter.acquire(client)
    if wait > 0:
        response = _login_form(request, 429, "Too many sign-in attempts. Wait a minute and try again.")
        response.headers["retry-after"] = str(int(wait) + 1)
        return response
    if not deps.settings.password_sign_in:
        return PlainTextResponse("password sign-in is off: sign in with the identity provider", 403, headers=HEADERS)
    form = await pages.form(request)
    if not pages.same(str(form.get("csrf_token", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        return PlainTextResponse("the form's CSRF token is missing or wrong; reload the page", 403, headers=HEADERS)
    username = str(form.get("username", ""))[:100]
    outcome, user = await deps.accounts.sign_in(username, str(form.get("password", ""))[:1000])
    if outcome is SignIn.LOCKED:
        await deps.accounts.audit(username, "sign_in_refused_locked")
        return _login_form(request, 403, "This account is locked after too many wrong passwords. Try again later.")
    if user is None:
        await deps.accounts.audit(username, "sign_in_failed")
        return _login_form(request, 401, "Wrong username or password.")
    token, _ = await deps.accounts.open_session(user)
    await deps.accounts.audit(user.username, "sign_in")
    response = RedirectResponse("/", status_code=303, headers=HEADERS)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(deps.settings.session_hours * 3600), httponly=True, samesite="strict",
        secure=deps.settings.cookie_secure, path="/",
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@staff_action
async def logout(request: Request, session: Session, form: FormData) -> Response:
    deps = pages.deps(request)
    await deps.accounts.close_session(request.cookies.get(SESSION_COOKIE, ""))
    await deps.accounts.audit(session.user.username, "sign_out")
    response = RedirectResponse("/login", status_code=303, headers=HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- queue and ticket ------------------------------------------------------------------------


@staff_page
async def queue_page(request: Request, session: Session) -> Response:
    deps = pages.deps(request)
    try:
        filters = Filters.parse(request.query_params)
    except BadFilter as exc:
        return PlainTextResponse(f"{exc}", status_code=400, headers=HEADERS)
    # One call per status shown, at once: the page waits for the slowest, not for their sum.
    asks = filters.requests(session.user.username, deps.settings.queue_page_size)
    replies = await asyncio.gather(*(pages.call(deps.agent.ListTickets(ask)) for ask in asks))
    tickets = [t for reply in replies for t in reply.tickets]
    now = datetime.now(UTC)
    return pages.render(
        request,
        "queue.html",
        session=session,
        rows=[queue.row(t, now) for t in queue.order(tickets)],
        mine=filters.mine,
        selected=filters.selected(),
        statuses=[queue.STATUSES[s] for s in queue.QUEUE_STATUSES],
        reasons=list(queue.REASONS.values()),
        channels=list(queue.CHANNELS.values()),
    )


def _ticket_name(request: Request) -> str:
    ticket = request.path_params["ticket"]
    if not _TICKET.match(ticket):
        raise HTTPException(404, "no such ticket")
    return f"tickets/{ticket}"


@dataclass(frozen=True)
class Entry:
    author: str
    text: str
    time: str
    delivery: str
    delivery_name: str = ""  # "deliveries/{id}": the page's live status follows it


def _when(ts: Timestamp) -> str:
    return ts.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _request_id(form: FormData) -> str | None:
    """The form's request id (a UUID the page rendered), as the mesh's idempotency key."""
    try:
        return f"console-{uuid.UUID(str(form.get('request_id', '')))}"
    except ValueError:
        return None


async def _suggestion(deps: Deps, ticket: str) -> tuple[str, str]:
    """The engine's draft for the reply box, or why there is none (the page works either way)."""
    try:
        found = await deps.agent.SuggestReply(agent_service_pb2.SuggestReplyRequest(ticket=ticket))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return "", exc.details() or "no suggestion for this ticket"
        return "", "the suggestion service did not answer; try again"
    return found.text, ""


def _text(form: FormData) -> str:
    """A textarea's text as the person saw it: browsers send its line breaks as CRLF."""
    return str(form.get("text", "")).replace("\r\n", "\n").strip()


async def _conversation(deps: Deps, ticket: str) -> list[Entry]:
    entries: list[Entry] = []
    token = ""
    for _ in range(10):  # at most 1,000 messages on one page
        reply = await pages.call(
            deps.agent.ListMessages(
                agent_service_pb2.ListMessagesRequest(ticket=ticket, page_size=100, page_token=token)
            )
        )
        entries += [
            Entry(
                author=AUTHORS.get(m.author, ""),
                text=m.text,
                time=_when(m.create_time),
                delivery=DELIVERY.get(m.delivery_status, ""),
                delivery_name=m.delivery,
            )
            for m in reply.messages
        ]
        token = reply.next_page_token
        if not token:
            break
    return entries


async def _card(deps: Deps, customer: str) -> customers.CustomerCard | None:
    """The customer card, or None: the ticket page works without it."""
    try:
        found = await deps.identity.GetCustomer(identity_service_pb2.GetCustomerRequest(name=customer))
    except grpc.aio.AioRpcError:
        return None
    return customers.card(found.customer)


async def _nothing() -> tuple[str, str]:
    return "", ""


@staff_page
async def ticket_page(request: Request, session: Session) -> Response:
    deps = pages.deps(request)
    name = _ticket_name(request)
    ticket = (await pages.call(deps.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=name)))).ticket
    suggest = request.query_params.get("suggest") == "1" and ticket.status != agent_pb2.TICKET_STATUS_RESOLVED
    # What the page shows besides the ticket, read at once.
    entries, notes, card, trail, (draft, no_draft), staff = await asyncio.gather(
        _conversation(deps, name),
        pages.call(deps.agent.ListNotes(agent_service_pb2.ListNotesRequest(ticket=name, page_size=100))),
        _card(deps, ticket.customer),
        deps.accounts.audit_trail(name),
        _suggestion(deps, name) if suggest else _nothing(),
        deps.accounts.usernames(),
    )
    return pages.render(
        request,
        "ticket.html",
        session=session,
        ticket=queue.row(ticket, datetime.now(UTC)),
        notes=[
            Entry(author=n.actor or n.principal, text=n.text, time=_when(n.create_time), delivery="")
            for n in notes.notes
        ],
        note_request_id=str(uuid.uuid4()),
        escalate_request_id=str(uuid.uuid4()),
        staff=staff,
        escalation_reasons=list(ESCALATION_REASONS),
        card=card,
        draft=draft,
        no_draft=no_draft,
        detail=ticket.escalation_detail,
        customer=ticket.customer,
        entries=entries,
        trail=trail,
        request_id=str(uuid.uuid4()),
        resolved=ticket.status == agent_pb2.TICKET_STATUS_RESOLVED,
    )


@staff_action
async def reply(request: Request, session: Session, form: FormData) -> Response:
    deps = pages.deps(request)
    name = _ticket_name(request)
    text = _text(form)
    if not text or len(text) > MAX_REPLY:
        return PlainTextResponse(f"a reply is 1 to {MAX_REPLY} characters", 400, headers=HEADERS)
    request_id = _request_id(form)
    if request_id is None:
        return PlainTextResponse("the form's request id is missing; reload the page", 400, headers=HEADERS)
    actor = session.user.username
    await pages.call(
        deps.agent.ReplyToTicket(
            agent_service_pb2.ReplyToTicketRequest(ticket=name, text=text, request_id=request_id, actor=actor)
        )
    )
    await deps.accounts.audit(session.user.username, "reply", name, request_id=request_id, characters=len(text))
    return RedirectResponse(request.url_for("ticket", ticket=name.removeprefix("tickets/")).path, 303, headers=HEADERS)


@staff_action
async def resolve(request: Request, session: Session, form: FormData) -> Response:
    deps = pages.deps(request)
    name = _ticket_name(request)
    note = str(form.get("note", "")).strip()[:1000]
    await pages.call(
        deps.agent.ResolveTicket(
            agent_service_pb2.ResolveTicketRequest(ticket=name, note=note, actor=session.user.username)
        )
    )
    await deps.accounts.audit(session.user.username, "resolve", name)
    return RedirectResponse(request.url_for("ticket", ticket=name.removeprefix("tickets/")).path, 303, headers=HEADERS)


@staff_action
async def assign(request: Request, session: Session, form: FormData) -> Response:
    """Assign to me (no `assignee` given) or reassign to another staff member."""
    deps = pages.deps(request)
    name = _ticket_name(request)
    assignee = str(form.get("assignee", "")).strip().lower() or session.user.username
    if assignee not in await deps.accounts.usernames():
        return PlainTextResponse(f"no staff member is called {assignee!r}", 400, headers=HEADERS)
    current = (await pages.call(deps.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=name)))).ticket
    change = agent_pb2.Ticket(name=name, etag=current.etag, assignee=assignee)
    await pages.call(
        deps.agent.UpdateTicket(
            agent_service_pb2.UpdateTicketRequest(
                ticket=change, update_mask=FieldMask(paths=["assignee"]), actor=session.user.username
            )
        )
    )
    await deps.accounts.audit(session.user.username, "assign", name, assignee=assignee)
    return RedirectResponse(request.url_for("ticket", ticket=name.removeprefix("tickets/")).path, 303, headers=HEADERS)


@staff_action
async def escalate(request: Request, session: Session, form: FormData) -> Response:
    """Escalate with a reason, e.g. an answered question the customer's reply shows needs a person."""
    deps = pages.deps(request)
    name = _ticket_name(request)
    reason = str(form.get("reason", "")).strip()
    value = ESCALATION_REASONS.get(reason)
    if value is None:
        return PlainTextResponse(
            f"reason {reason!r} is not one of: {', '.join(ESCALATION_REASONS)}", 400, headers=HEADERS
        )
    detail = str(form.get("detail", "")).strip()[:1000]
    request_id = _request_id(form)
    if request_id is None:
        return PlainTextResponse("the form's request id is missing; reload the page", 400, headers=HEADERS)
    await pages.call(
        deps.agent.EscalateTicket(
            agent_service_pb2.EscalateTicketRequest(
                ticket=name,
                reason=value,  # type: ignore[arg-type]
                detail=detail,
                request_id=request_id,
                actor=session.user.username,
            )
        )
    )
    await deps.accounts.audit(session.user.username, "escalate", name, reason=reason, request_id=request_id)
    return RedirectResponse(request.url_for("ticket", ticket=name.removeprefix("tickets/")).path, 303, headers=HEADERS)


@staff_action
async def add_note(request: Request, session: Session, form: FormData) -> Response:
    """An internal note: kept by the agent service with the ticket, shown to staff only."""
    deps = pages.deps(request)
    name = _ticket_name(request)
    text = _text(form)
    if not text or len(text) > MAX_NOTE:
        return PlainTextResponse(f"a note is 1 to {MAX_NOTE} characters", 400, headers=HEADERS)
    request_id = _request_id(form)
    if request_id is None:
        return PlainTextResponse("the form's request id is missing; reload the page", 400, headers=HEADERS)
    await pages.call(
        deps.agent.AddNote(
            agent_service_pb2.AddNoteRequest(ticket=name, text=text, actor=session.user.username, request_id=request_id)
        )
    )
    await deps.accounts.audit(session.user.username, "note", name, request_id=request_id, characters=len(text))
    return RedirectResponse(request.url_for("ticket", ticket=name.removeprefix("tickets/")).path, 303, headers=HEADERS)


def _customer_name(request: Request) -> str:
    customer = customers.customer_id(request.path_params["customer"])
    if customer is None:
        raise HTTPException(404, "no such customer")
    return f"customers/{customer}"


@staff_page
async def customer_page(request: Request, session: Session) -> Response:
    deps = pages.deps(request)
    name = _customer_name(request)
    found = await pages.call(deps.identity.GetCustomer(identity_service_pb2.GetCustomerRequest(name=name)), "customer")
    if found.customer.name != name:  # merged: identity answers with the customer it was merged into
        return RedirectResponse(f"/{found.customer.name}", 303, headers=HEADERS)
    history = await pages.call(
        deps.agent.GetCustomerHistory(agent_service_pb2.GetCustomerHistoryRequest(customer=name, page_size=50))
    )
    now = datetime.now(UTC)
    return pages.render(
        request,
        "customer.html",
        session=session,
        card=customers.card(found.customer),
        tickets=[queue.row(t, now) for t in history.tickets],
        messages=[
            Entry(author=AUTHORS.get(m.author, ""), text=m.text, time=_when(m.create_time), delivery="")
            for m in history.messages
        ],
        trail=await deps.accounts.audit_trail(name),
        request_id=str(uuid.uuid4()),
        admin=session.user.role is Role.ADMIN,
    )


def _admin_only(session: Session) -> Response | None:
    if session.user.role is not Role.ADMIN:
        return PlainTextResponse("only an admin may merge or erase customers", 403, headers=HEADERS)
    return None


def _reason(form: FormData) -> str | None:
    reason = str(form.get("reason", "")).strip()
    return reason if 0 < len(reason) <= customers.MAX_REASON else None


@staff_action
async def merge_customer(request: Request, session: Session, form: FormData) -> Response:
    """Merges this customer (the source) into another (the target), with a reason; admins only."""
    if (refused := _admin_only(session)) is not None:
        return refused
    deps = pages.deps(request)
    source = _customer_name(request)
    target = customers.customer_id(str(form.get("target", "")))
    reason = _reason(form)
    request_id = _request_id(form)
    if target is None or f"customers/{target}" == source:
        return PlainTextResponse("the target is another customer's id", 400, headers=HEADERS)
    if reason is None or request_id is None:
        return PlainTextResponse(
            f"a merge needs a reason of 1 to {customers.MAX_REASON} characters", 400, headers=HEADERS
        )
    await pages.call(
        deps.identity.MergeCustomers(
            identity_service_pb2.MergeCustomersRequest(
                source_customer=source, target_customer=f"customers/{target}", reason=reason, request_id=request_id
            )
        ),
        "customer",
    )
    for name in (source, f"customers/{target}"):
        await deps.accounts.audit(session.user.username, "merge", name, source=source, into=target, reason=reason)
    return RedirectResponse(f"/customers/{target}", 303, headers=HEADERS)


@staff_action
async def erase_customer(request: Request, session: Session, form: FormData) -> Response:
    """Erases a customer's personal data; admins only, confirmed by typing the customer's id."""
    if (refused := _admin_only(session)) is not None:
        return refused
    deps = pages.deps(request)
    name = _customer_name(request)
    if str(form.get("confirm", "")).strip() != name.removeprefix("customers/"):
        return PlainTextResponse("to erase, type the customer's id into the confirmation box", 400, headers=HEADERS)
    reason = _reason(form)
    request_id = _request_id(form)
    if reason is None or request_id is None:
        return PlainTextResponse(
            f"an erasure needs a reason of 1 to {customers.MAX_REASON} characters", 400, headers=HEADERS
        )
    await pages.call(
        deps.identity.EraseCustomer(
            identity_service_pb2.EraseCustomerRequest(name=name, reason=reason, request_id=request_id)
        ),
        "customer",
    )
    await deps.accounts.audit(session.user.username, "erase", name, reason=reason)
    return RedirectResponse(f"/customers/{name.removeprefix('customers/')}", 303, headers=HEADERS)


async def queue_events(request: Request) -> Response:
    """The live queue's stream (server-sent events): 401 without a session, so a signed-out page's
    EventSource stops instead of retrying."""
    session = await pages.session(request)
    if session is None:
        return PlainTextResponse("sign in first", status_code=401, headers=HEADERS)
    deps = pages.deps(request)
    token = request.cookies.get(SESSION_COOKIE, "")

    async def still_signed_in() -> bool:
        return await deps.accounts.session(token) is not None

    stream = deps.live.stream(still_signed_in, deps.settings.live_heartbeat_seconds)
    # no-transform and X-Accel-Buffering: a proxy must pass each event on at once.
    headers = {**HEADERS, "cache-control": "no-store, no-transform", "x-accel-buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """Ready when its own database answers (the mesh's readiness is each service's own)."""
    try:
        await pages.deps(request).accounts.pool.fetchval("SELECT 1")
    except Exception:  # any failure means not ready
        return PlainTextResponse("database unavailable", status_code=503)
    return PlainTextResponse("ready")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=HEADERS)


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fte_console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def create_app(settings: ConsoleSettings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await migrate(settings, SCHEMA, "fte_console")
        pool = await create_pool(settings, SCHEMA, application_name="fte-console")
        token = settings.service_token.get_secret_value() or None
        channel = connect(settings.agent_target, token=token, default_timeout=settings.agent_timeout_seconds)
        identity_channel = connect(
            settings.identity_target, token=token, default_timeout=settings.agent_timeout_seconds
        )
        knowledge_channel = connect(
            settings.knowledge_target, token=token, default_timeout=settings.agent_timeout_seconds
        )
        live = LiveFeed()
        stopping = asyncio.Event()
        feed = asyncio.create_task(run_feed(settings, live, settings.live_group_prefix, stopping))
        outcomes = delivery.DeliveryFeed()
        outcomes_feed = asyncio.create_task(
            run_feed(settings, outcomes, settings.delivery_group_prefix, stopping, topic=DELIVERY_OUTCOMES)
        )
        try:
            app.state.deps = Deps(
                settings=settings,
                accounts=Accounts(
                    pool,
                    max_failures=settings.login_max_failures,
                    lockout=timedelta(minutes=settings.lockout_minutes),
                    session_ttl=timedelta(hours=settings.session_hours),
                ),
                agent=agent_service_pb2_grpc.AgentServiceStub(channel),
                identity=identity_service_pb2_grpc.IdentityServiceStub(identity_channel),
                knowledge=knowledge_service_pb2_grpc.KnowledgeServiceStub(knowledge_channel),
                limiter=RateLimiter(settings.login_rate_per_minute, settings.login_rate_per_minute),
                templates=templates(),
                live=live,
                delivery=outcomes,
            )
            yield
        finally:
            stopping.set()
            live.close()
            outcomes.close()
            await feed
            await outcomes_feed
            await channel.close()
            await identity_channel.close()
            await knowledge_channel.close()
            await pool.close()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *oidc.OidcSignIn(HEADERS, SESSION_COOKIE).routes(),
        Route("/", queue_page, methods=["GET"]),
        Route("/events/queue", queue_events, methods=["GET"]),
        Route("/events/tickets/{ticket}", delivery.ticket_events(pages.session, HEADERS), methods=["GET"]),
        Route("/tickets/{ticket}", ticket_page, methods=["GET"], name="ticket"),
        Route("/tickets/{ticket}/reply", reply, methods=["POST"]),
        Route("/tickets/{ticket}/resolve", resolve, methods=["POST"]),
        Route("/tickets/{ticket}/assign", assign, methods=["POST"]),
        Route("/tickets/{ticket}/escalate", escalate, methods=["POST"]),
        Route("/tickets/{ticket}/notes", add_note, methods=["POST"]),
        Route("/dashboard", staff_page(dashboard.page), methods=["GET"]),
        Route("/customers/{customer}", customer_page, methods=["GET"]),
        Route("/customers/{customer}/merge", merge_customer, methods=["POST"]),
        Route("/customers/{customer}/erase", erase_customer, methods=["POST"]),
        Route("/customers/{customer}/verify", staff_action(verify.verify_claim(HEADERS)), methods=["POST"]),
        Route("/deadletters", deadletters.list_page, methods=["GET"]),
        Route("/deadletters/replay", deadletters.replay, methods=["POST"]),
        Route("/deadletters/{topic}/{partition:int}/{offset:int}", deadletters.show_page, methods=["GET"]),
        Route("/traces", traces.trace_page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(resources.files("fte_console") / "static")), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
