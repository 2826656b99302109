"""The Starlette application: routes, the edge middleware and the lifespan (Kafka producer, the
database pool, the AgentService channel, the Gmail history sweep)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from importlib import resources
from typing import Any

import grpc
from fte.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from fte_runtime import topics
from fte_runtime.context import current_correlation_id
from fte_runtime.db import apply_migrations, create_pool
from fte_runtime.grpc_client import connect
from fte_runtime.ratelimit import RateLimiter
from fte_runtime.tasks import cancel_all
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, Router
from twilio.request_validator import RequestValidator

from fte_gateway import events, forms, pages
from fte_gateway.events import InvalidWebhook, Outgoing
from fte_gateway.gmail import GmailApi, GmailSync, GmailUnavailable
from fte_gateway.metrics import EVENTS_PUBLISHED, GMAIL_SYNCS, REJECTED
from fte_gateway.middleware import EdgeMiddleware
from fte_gateway.oidc import PushAuthError, PushVerifier
from fte_gateway.openapi import OPENAPI
from fte_gateway.proxies import client_ip, parse_networks, public_url
from fte_gateway.publisher import KafkaUnavailable, Publisher
from fte_gateway.settings import GatewaySettings
from fte_gateway.signing import FormParams, parse_urlencoded, signed
from fte_gateway.store import SCHEMA, GatewayStore

log = logging.getLogger("fte.gateway")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
RETRY_MESSAGE = "We could not take your request right now. Please try again in a minute; nothing was lost."
STATIC = resources.files("fte_gateway") / "static"
STATIC_TYPES = {
    "support.css": "text/css; charset=utf-8",
    "support.js": "text/javascript; charset=utf-8",
    "embed.js": "text/javascript; charset=utf-8",
}


@dataclass
class Deps:
    """What the routes use; built in the lifespan."""

    settings: GatewaySettings
    publisher: Publisher
    proxies: Any
    limiter: RateLimiter
    verifier: PushVerifier
    validator: RequestValidator
    gmail: GmailSync | None = None
    agent: agent_service_pb2_grpc.AgentServiceAsyncStub | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _unavailable(route: str, what: str) -> Response:
    REJECTED.labels(route, "unavailable").inc()
    return JSONResponse(
        {"error": "unavailable", "message": RETRY_MESSAGE}, status_code=503, headers={"Retry-After": "5"}
    )


# Counter children by kind (a bounded set): a label lookup takes a lock each time.
_PUBLISHED_BY_KIND: dict[str, Any] = {}


async def _publish(deps: Deps, kind: str, outgoing: list[Outgoing]) -> None:
    await deps.publisher.publish(outgoing, current_correlation_id())
    counter = _PUBLISHED_BY_KIND.get(kind)
    if counter is None:
        counter = _PUBLISHED_BY_KIND[kind] = EVENTS_PUBLISHED.labels(kind)
    counter.inc(len(outgoing))


# -- health, API description ------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    ready = await _deps(request).publisher.ready()
    return JSONResponse({"status": "ready" if ready else "kafka unavailable"}, status_code=200 if ready else 503)


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


# -- Gmail push -------------------------------------------------------------------------------


async def gmail_push(request: Request) -> Response:
    route = "/webhooks/gmail"
    deps = _deps(request)
    if deps.gmail is None:
        return JSONResponse({"error": "gmail is not enabled"}, status_code=404)
    try:
        await asyncio.to_thread(deps.verifier.verify, request.headers.get("authorization"))
    except PushAuthError as exc:
        REJECTED.labels(route, f"auth_{exc.status}").inc()
        log.warning("gmail push refused", extra={"reason": exc.reason})
        return JSONResponse({"error": "unauthorized" if exc.status == 401 else "forbidden"}, status_code=exc.status)
    notification = _decode_push(await request.body())
    if notification is None:
        REJECTED.labels(route, "bad_body").inc()
        return JSONResponse({"error": "body must be a Pub/Sub push with base64 JSON data"}, status_code=400)
    if str(notification.get("emailAddress", "")).casefold() != deps.gmail.address:
        # Another mailbox's notification: nothing of ours to sync; acknowledge so it is not redelivered.
        REJECTED.labels(route, "other_mailbox").inc()
        return Response(status_code=204)
    try:
        result = await deps.gmail.sync(current_correlation_id())
    except (KafkaUnavailable, GmailUnavailable) as exc:
        GMAIL_SYNCS.labels("push", "failed").inc()
        log.warning("gmail sync failed; the push will be redelivered", extra={"error": type(exc).__name__})
        return _unavailable(route, "sync")
    GMAIL_SYNCS.labels("push", "fallback" if result.fallback else "ok").inc()
    EVENTS_PUBLISHED.labels("email").inc(result.published)
    return Response(status_code=204)


def _decode_push(body: bytes) -> dict[str, Any] | None:
    """{"message": {"data": base64(JSON {emailAddress, historyId})}} -> that JSON (parsed, never evaluated)."""
    try:
        envelope = json.loads(body)
        data = envelope["message"]["data"]
        if not isinstance(data, str):
            return None
        decoded = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("emailAddress"), str):
        return None
    history = decoded.get("historyId")
    if isinstance(history, bool) or not isinstance(history, int | str) or not str(history).isdigit():
        return None
    return decoded


# -- Twilio WhatsApp --------------------------------------------------------------------------


async def _twilio_form(request: Request, route: str) -> FormParams | Response:
    """The signed form, or the response refusing it."""
    deps = _deps(request)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        REJECTED.labels(route, "bad_content_type").inc()
        return JSONResponse({"error": "expected application/x-www-form-urlencoded"}, status_code=415)
    try:
        params = parse_urlencoded((await request.body()).decode())
    except UnicodeDecodeError:
        REJECTED.labels(route, "bad_body").inc()
        return JSONResponse({"error": "body is not UTF-8"}, status_code=400)
    url = public_url(request, deps.proxies, deps.settings.public_base_url)
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not signed(deps.validator, url, params, signature):
        REJECTED.labels(route, "bad_signature").inc()
        return JSONResponse({"error": "invalid signature"}, status_code=403)
    return params


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")


async def whatsapp_inbound(request: Request) -> Response:
    route = "/webhooks/whatsapp"
    params = await _twilio_form(request, route)
    if isinstance(params, Response):
        return params
    try:
        key, message = events.from_whatsapp(params)
    except InvalidWebhook as exc:
        REJECTED.labels(route, "invalid").inc()
        return JSONResponse({"error": str(exc)}, status_code=400)
    event = Outgoing(topics.TICKETS_INCOMING, key, f"whatsapp:{message.channel_message_id}", message)
    try:
        await _publish(_deps(request), "whatsapp", [event])
    except KafkaUnavailable:
        return _unavailable(route, "kafka")
    return _twiml()


async def whatsapp_status(request: Request) -> Response:
    route = "/webhooks/whatsapp/status"
    params = await _twilio_form(request, route)
    if isinstance(params, Response):
        return params
    try:
        message = events.from_twilio_status(params)
    except InvalidWebhook as exc:
        REJECTED.labels(route, "invalid").inc()
        return JSONResponse({"error": str(exc)}, status_code=400)
    if message is not None:
        status_name = params.get("MessageStatus", "").strip().lower()
        # The same callback delivered twice carries the same event id: consumers drop the copy.
        event_id = f"twilio-status:{message.provider_message_id}:{status_name}"
        event = Outgoing(topics.DELIVERY_STATUS, message.provider_message_id, event_id, message)
        try:
            await _publish(_deps(request), "delivery_status", [event])
        except KafkaUnavailable:
            return _unavailable(route, "kafka")
    return _twiml()


# -- web form ---------------------------------------------------------------------------------


def _security_headers(deps: Deps) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {deps.settings.frame_ancestors}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


async def support_page(request: Request) -> Response:
    html = (STATIC / "support.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers=_security_headers(_deps(request)))


async def support_static(request: Request) -> Response:
    name = request.path_params.get("name", "embed.js")
    if name not in STATIC_TYPES:
        return JSONResponse({"error": "not found"}, status_code=404)
    return Response(
        (STATIC / name).read_bytes(),
        media_type=STATIC_TYPES[name],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


async def _form_data(request: Request) -> Mapping[str, object] | None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            return None
        return data if isinstance(data, dict) else None
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=50)
        return {k: v for k, v in form.items() if isinstance(v, str)}
    return None


async def support_submit(request: Request) -> Response:
    route = "/support/submit"
    deps = _deps(request)
    wait = deps.limiter.acquire(client_ip(request, deps.proxies))
    if wait:
        REJECTED.labels(route, "rate_limited").inc()
        return JSONResponse(
            {"error": "rate_limited", "message": "Too many requests; please wait a minute and try again."},
            status_code=429,
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    data = await _form_data(request)
    if data is None:
        REJECTED.labels(route, "bad_body").inc()
        return JSONResponse(
            {"error": "invalid_body", "message": "Send a JSON object or a form (application/x-www-form-urlencoded)."},
            status_code=422,
        )
    form, errors = forms.validate(data)
    if form is None:
        REJECTED.labels(route, "invalid").inc()
        if _wants_html(request):
            return HTMLResponse(pages.errors_page(errors), status_code=422)
        return JSONResponse(
            {"error": "validation_failed", "message": "Please correct the fields listed.", "fields": errors},
            status_code=422,
        )
    reference = forms.mint_reference(form.request_id)
    status_url = f"/support/ticket/{reference}"
    if form.honeypot_filled:
        # Looks like a success to the bot; nothing is published.
        REJECTED.labels(route, "honeypot").inc()
    else:
        key, message = events.from_web_form(form, reference)
        try:
            await _publish(deps, "web_form", [Outgoing(topics.TICKETS_INCOMING, key, f"web:{reference}", message)])
        except KafkaUnavailable:
            if _wants_html(request):
                return HTMLResponse(pages.message_page("Please try again", RETRY_MESSAGE), status_code=503)
            return _unavailable(route, "kafka")
    if _wants_html(request):
        return HTMLResponse(pages.submitted_page(reference, status_url), status_code=202)
    return JSONResponse({"reference": reference, "status_url": status_url}, status_code=202)


async def ticket_reply(request: Request) -> Response:
    """A reply typed on a ticket's status page (e.g. a one-time code sent back): published for the
    agent as a follow-up on that ticket. The reference is the only key: it was shown to the submitter."""
    route = "/support/ticket/reply"
    deps = _deps(request)
    reference = request.path_params["reference"]
    wait = deps.limiter.acquire(client_ip(request, deps.proxies))
    if wait:
        REJECTED.labels(route, "rate_limited").inc()
        return JSONResponse(
            {"error": "rate_limited", "message": "Too many requests; please wait a minute and try again."},
            status_code=429,
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    if not forms.REFERENCE.match(reference):
        return JSONResponse({"error": "not_found", "message": "There is no request with this reference."}, 404)
    data = await _form_data(request)
    text, errors = forms.validate_reply(data) if data is not None else (None, {"message": "Send a JSON object."})
    if text is None:
        REJECTED.labels(route, "invalid").inc()
        return JSONResponse(
            {"error": "validation_failed", "message": "Please correct the fields listed.", "fields": errors},
            status_code=422,
        )
    if deps.agent is None:
        return _unavailable(route, "agent")
    try:
        await deps.agent.GetTicket(
            agent_service_pb2.GetTicketRequest(name=f"tickets/{reference}"), timeout=deps.settings.agent_timeout_seconds
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return JSONResponse({"error": "not_found", "message": "There is no request with this reference."}, 404)
        return _unavailable(route, "agent")
    key, message = events.from_status_page(reference, text)
    try:
        await _publish(deps, "web_form", [Outgoing(topics.TICKETS_INCOMING, key, message.channel_message_id, message)])
    except KafkaUnavailable:
        return _unavailable(route, "kafka")
    status_url = f"/support/ticket/{reference}"
    if _wants_html(request):
        return HTMLResponse(pages.submitted_page(reference, status_url), status_code=202)
    return JSONResponse({"reference": reference, "status_url": status_url}, status_code=202)


async def ticket_status(request: Request) -> Response:
    deps = _deps(request)
    reference = request.path_params["reference"]
    as_json = "application/json" in request.headers.get("accept", "")
    headers = {**_security_headers(deps), "Cache-Control": "no-store"}

    def answer(status: int, title: str, text: str) -> Response:
        if as_json:
            return JSONResponse({"error": title, "message": text}, status_code=status)
        return HTMLResponse(pages.message_page(title, text), status_code=status, headers=headers)

    if not forms.REFERENCE.match(reference):
        return answer(404, "Not found", "There is no request with this reference.")
    if deps.agent is None:
        return answer(503, "Unavailable", "Ticket status is not available right now.")
    name = f"tickets/{reference}"
    timeout = deps.settings.agent_timeout_seconds
    try:
        ticket = (await deps.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=name), timeout=timeout)).ticket
        listed = await deps.agent.ListMessages(
            agent_service_pb2.ListMessagesRequest(ticket=name, page_size=100), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            # Submitted but not yet turned into a ticket by the agent (or never submitted).
            if as_json:
                return JSONResponse({"reference": reference, "status": "received", "messages": []}, headers=headers)
            return HTMLResponse(pages.pending_page(reference), headers=headers)
        log.warning("ticket lookup failed", extra={"code": exc.code().name})
        return answer(503, "Unavailable", "Ticket status is not available right now. Please try again shortly.")
    status = pages.STATUS_LABELS.get(ticket.status, "Received")
    entries = [
        pages.ConversationEntry(
            author=pages.AUTHOR_LABELS.get(m.author, "Support"),
            text=m.text,
            time=m.create_time.ToDatetime(UTC).isoformat(timespec="seconds") if m.HasField("create_time") else "",
        )
        for m in listed.messages
    ]
    if as_json:
        return JSONResponse(
            {
                "reference": reference,
                "status": status,
                "subject": ticket.subject,
                "messages": [{"author": e.author, "text": e.text, "time": e.time} for e in entries],
            },
            headers=headers,
        )
    return HTMLResponse(pages.ticket_page(reference, status, ticket.subject, entries), headers=headers)


# -- assembly ---------------------------------------------------------------------------------


async def _sweep(deps: Deps) -> None:
    """Catch dropped pushes: sync on a timer; prune old published ids now and then."""
    assert deps.gmail is not None
    rounds = 0
    while True:
        await asyncio.sleep(deps.settings.gmail_sweep_seconds)
        try:
            result = await deps.gmail.sync(current_correlation_id())
            GMAIL_SYNCS.labels("sweep", "fallback" if result.fallback else "ok").inc()
            EVENTS_PUBLISHED.labels("email").inc(result.published)
            rounds += 1
            if rounds % 60 == 0:
                await deps.gmail.store.prune_published()
        except (KafkaUnavailable, GmailUnavailable) as exc:
            GMAIL_SYNCS.labels("sweep", "failed").inc()
            log.warning("gmail sweep failed", extra={"error": type(exc).__name__})
        except Exception:
            GMAIL_SYNCS.labels("sweep", "failed").inc()
            log.exception("gmail sweep crashed; retrying next round")


def routes() -> list[Route]:
    # Starlette tries routes in order: the ingest routes come first.
    return [
        Route("/webhooks/whatsapp", whatsapp_inbound, methods=["POST"]),
        Route("/support/submit", support_submit, methods=["POST"]),
        Route("/webhooks/whatsapp/status", whatsapp_status, methods=["POST"]),
        Route("/webhooks/gmail", gmail_push, methods=["POST"]),
        Route("/support", support_page, methods=["GET"]),
        Route("/support/ticket/{reference}", ticket_status, methods=["GET"]),
        Route("/support/ticket/{reference}/reply", ticket_reply, methods=["POST"]),
        Route("/support/static/{name}", support_static, methods=["GET"]),
        Route("/support/embed.js", support_static, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


def create_app(settings: GatewaySettings, *, migrate: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        publisher = Publisher(settings)
        await publisher.start()
        deps = Deps(
            settings=settings,
            publisher=publisher,
            proxies=parse_networks(settings.trusted_proxies),
            limiter=RateLimiter(settings.form_rate_per_minute, settings.form_rate_burst),
            verifier=PushVerifier(
                audience=settings.gmail_push_audience,
                service_account=settings.gmail_push_service_account,
                certs_url=settings.google_certs_url,
            ),
            validator=RequestValidator(settings.twilio_auth_token.get_secret_value()),
        )
        pool = None
        channel = None
        try:
            if settings.gmail_enabled:
                if migrate:
                    await apply_migrations(
                        settings.database_url.get_secret_value(), SCHEMA, resources.files("fte_gateway") / "migrations"
                    )
                pool = await create_pool(settings, SCHEMA, application_name="fte-gateway")
                deps.gmail = GmailSync(settings, GatewayStore(pool), publisher, GmailApi(settings))
                if settings.gmail_sweep_seconds > 0:
                    deps.background.append(asyncio.create_task(_sweep(deps), name="gmail-sweep"))
            if settings.agent_target:
                channel = connect(
                    settings.agent_target,
                    token=settings.service_token.get_secret_value() or None,
                    default_timeout=settings.agent_timeout_seconds,
                )
                deps.agent = agent_service_pb2_grpc.AgentServiceStub(channel)
            app.state.deps = deps
            # Everything allocated so far lives as long as the process: keep it out of the cyclic
            # collector's scans, which otherwise show up in the request latency tail.
            gc.collect()
            gc.freeze()
            yield
        finally:
            await cancel_all(deps.background)
            await publisher.stop()
            if channel is not None:
                await channel.close()
            if pool is not None:
                await pool.close()

    router = Router(routes=routes())
    middleware = [Middleware(EdgeMiddleware, router=router, max_body_bytes=settings.max_body_bytes)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["content-type", "x-correlation-id"],
                expose_headers=["x-correlation-id"],
                max_age=600,
            )
        )
    return Starlette(routes=router.routes, middleware=middleware, lifespan=lifespan)
