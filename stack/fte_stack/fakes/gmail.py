"""A local fake of the Gmail API's HTTP surface, for google-api-python-client.

Point the real client at it::

    build("gmail", "v1", credentials=AnonymousCredentials(), static_discovery=True,
          client_options={"api_endpoint": fake.url})

Implemented (paths as the static discovery document builds them): users.getProfile, users.watch,
users.history.list (404 for a startHistoryId older than the retained history), users.messages.list,
users.messages.get (format full, metadata, minimal, raw) and users.messages.send (JSON `raw`, or
the simple/multipart upload paths). Sent messages land in the mailbox with the SENT label.
messages.list understands one search operator, `q=rfc822msgid:<id>`.

Admin endpoints for tests and the local stack (under /_fake/):
  POST /_fake/inbox            body: a raw RFC 822 message -> {"id", "threadId", "historyId"}
  GET  /_fake/sent             -> {"messages": [{"id", "threadId", "raw", "labelIds"}]}
  POST /_fake/fail             {"count": N, "status": 500, "path": "messages/send"} (path optional)
  POST /_fake/expire-history   forget the history so far (the next history.list from an older id is 404)
  GET  /_fake/state            mailbox address, historyId, message and watch counts
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import email.utils
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fte_stack.fakes._http import LocalHttpServer, serve_until_interrupted

API = "/gmail/v1/users/{userId}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    label_ids: list[str]
    history_id: int
    internal_date_ms: int

    @property
    def parsed(self) -> Message:
        return email.message_from_bytes(self.raw, policy=email.policy.compat32)

    def ref(self) -> dict[str, str]:
        return {"id": self.id, "threadId": self.thread_id}


@dataclass
class Failure:
    remaining: int
    status: int
    path: str | None


@dataclass
class GmailState:
    """The mailbox. Every access holds `lock`, so tests in other threads read it safely."""

    address: str
    # Like Gmail's, history ids only grow, also across restarts of the fake: a client that kept an
    # id from an earlier run sees it as too old (404) and falls back, instead of waiting for ids
    # the new mailbox would only reach much later.
    history_id: int = field(default_factory=lambda: int(time.time() * 1000))
    oldest_history_id: int = -1
    messages: dict[str, StoredMessage] = field(default_factory=dict)  # insertion order = arrival
    history: list[tuple[int, str]] = field(default_factory=list)  # (history id, message id added)
    thread_by_message_id_header: dict[str, str] = field(default_factory=dict)
    watches: list[dict[str, Any]] = field(default_factory=list)

    failures: list[Failure] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) seen
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.oldest_history_id < 0:
            self.oldest_history_id = self.history_id


_ids = itertools.count(int(time.time() * 1000) << 4)


def _new_id() -> str:
    return format(next(_ids), "x")


class FakeGmail:
    """The fake server plus a thread-safe view of its mailbox."""

    def __init__(self, address: str = "support@example.com", port: int = 0) -> None:
        self.state = GmailState(address=address)
        # Called (in the delivering thread) after each delivery, e.g. to send a Pub/Sub-style push.
        self.on_delivered: list[Callable[[StoredMessage], None]] = []
        self._server = LocalHttpServer(self.app(), port=port)

    @property
    def url(self) -> str:
        return self._server.url

    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    # -- thread-safe helpers for tests -------------------------------------------------------

    def deliver(self, raw: bytes, labels: tuple[str, ...] = ("INBOX", "UNREAD")) -> StoredMessage:
        """An email arrives in the mailbox: stored, threaded by its headers, history bumped."""
        with self.state.lock:
            stored = self._add(raw, list(labels), thread_id=None)
        for hook in self.on_delivered:
            hook(stored)
        return stored

    def sent(self) -> list[StoredMessage]:
        with self.state.lock:
            return [m for m in self.state.messages.values() if "SENT" in m.label_ids]

    def fail_next(self, count: int, status: int = 500, path: str | None = None) -> None:
        """The next `count` API calls (whose path contains `path`, if given) answer `status`."""
        with self.state.lock:
            self.state.failures.append(Failure(count, status, path))

    def expire_history(self) -> None:
        """Forget the history so far, as Gmail does after about a week."""
        with self.state.lock:
            self.state.history.clear()
            self.state.history_id += 1
            self.state.oldest_history_id = self.state.history_id

    @property
    def history_id(self) -> int:
        with self.state.lock:
            return self.state.history_id

    @property
    def watches(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.watches)

    # -- mailbox internals (caller holds the lock) ---------------------------------------------

    def _add(self, raw: bytes, labels: list[str], thread_id: str | None) -> StoredMessage:
        st = self.state
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        if thread_id is None:
            refs = " ".join(str(parsed.get(h, "")) for h in ("In-Reply-To", "References")).split()
            known = st.thread_by_message_id_header
            thread_id = next((known[r] for r in refs if r in known), None)
        msg_id = _new_id()
        thread_id = thread_id or msg_id
        st.history_id += 1
        stored = StoredMessage(msg_id, thread_id, raw, labels, st.history_id, int(time.time() * 1000))
        st.messages[msg_id] = stored
        st.history.append((st.history_id, msg_id))
        header_id = parsed.get("Message-ID")
        if header_id:
            st.thread_by_message_id_header[str(header_id).strip()] = thread_id
        return stored

    def _injected_failure(self, path: str) -> int | None:
        with self.state.lock:
            for failure in self.state.failures:
                if failure.remaining > 0 and (failure.path is None or failure.path in path):
                    failure.remaining -= 1
                    return failure.status
            self.state.failures = [f for f in self.state.failures if f.remaining > 0]
            return None

    # -- the HTTP app ----------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route(f"{API}/profile", self._profile, methods=["GET"]),
            Route(f"{API}/watch", self._watch, methods=["POST"]),
            Route(f"{API}/stop", self._stop_watch, methods=["POST"]),
            Route(f"{API}/history", self._history, methods=["GET"]),
            Route(f"{API}/messages", self._list, methods=["GET"]),
            Route(f"{API}/messages/send", self._send, methods=["POST"]),
            Route(f"/upload{API}/messages/send", self._send, methods=["POST"]),
            Route(f"{API}/messages/{{id}}", self._get, methods=["GET"]),
            Route("/_fake/inbox", self._admin_inbox, methods=["POST"]),
            Route("/_fake/sent", self._admin_sent, methods=["GET"]),
            Route("/_fake/fail", self._admin_fail, methods=["POST"]),
            Route("/_fake/expire-history", self._admin_expire, methods=["POST"]),
            Route("/_fake/state", self._admin_state, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_FailureMiddleware, fake=self)
        return app

    async def _profile(self, request: Request) -> Response:
        with self.state.lock:
            st = self.state
            return JSONResponse(
                {
                    "emailAddress": st.address,
                    "messagesTotal": len(st.messages),
                    "threadsTotal": len({m.thread_id for m in st.messages.values()}),
                    "historyId": str(st.history_id),
                }
            )

    async def _watch(self, request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body.get("topicName"), str):
            return _error(400, "Invalid topicName", "INVALID_ARGUMENT")
        with self.state.lock:
            self.state.watches.append(body)
            expiration = int(time.time() * 1000) + 7 * 24 * 3600 * 1000
            return JSONResponse({"historyId": str(self.state.history_id), "expiration": str(expiration)})

    async def _stop_watch(self, request: Request) -> Response:
        return Response(status_code=204)

    async def _history(self, request: Request) -> Response:
        q = request.query_params
        try:
            start = int(q["startHistoryId"])
        except (KeyError, ValueError):
            return _error(400, "Invalid startHistoryId", "INVALID_ARGUMENT")
        max_results = min(int(q.get("maxResults", "100")), 500)
        offset = int(q.get("pageToken", "0") or 0)
        label = q.get("labelId")
        with self.state.lock:
            st = self.state
            if start < st.oldest_history_id:
                return _error(404, "Requested entity was not found.", "NOT_FOUND")
            entries = [
                (hid, st.messages[mid])
                for hid, mid in st.history
                if hid > start and mid in st.messages and (label is None or label in st.messages[mid].label_ids)
            ]
            page = entries[offset : offset + max_results]
            body: dict[str, Any] = {"historyId": str(st.history_id)}
            if page:
                body["history"] = [
                    {
                        "id": str(hid),
                        "messages": [m.ref()],
                        "messagesAdded": [{"message": {**m.ref(), "labelIds": list(m.label_ids)}}],
                    }
                    for hid, m in page
                ]
            if offset + max_results < len(entries):
                body["nextPageToken"] = str(offset + max_results)
            return JSONResponse(body)

    async def _list(self, request: Request) -> Response:
        q = request.query_params
        max_results = min(int(q.get("maxResults", "100")), 500)
        offset = int(q.get("pageToken", "0") or 0)
        labels = q.getlist("labelIds")
        # Only the `rfc822msgid:` search operator is understood (looking a message up by its
        # Message-ID header, as a sender does to check whether a send went through).
        wanted_id = _rfc822msgid(q.get("q", ""))
        with self.state.lock:
            newest_first = [
                m
                for m in reversed(self.state.messages.values())
                if all(lb in m.label_ids for lb in labels)
                and (wanted_id is None or str(m.parsed.get("Message-ID", "")).strip().strip("<>") == wanted_id)
            ]
            page = newest_first[offset : offset + max_results]
            body: dict[str, Any] = {"resultSizeEstimate": len(newest_first)}
            if page:
                body["messages"] = [m.ref() for m in page]
            if offset + max_results < len(newest_first):
                body["nextPageToken"] = str(offset + max_results)
            return JSONResponse(body)

    async def _get(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "full")
        with self.state.lock:
            stored = self.state.messages.get(request.path_params["id"])
        if stored is None:
            return _error(404, "Requested entity was not found.", "NOT_FOUND")
        return JSONResponse(message_resource(stored, fmt, request.query_params.getlist("metadataHeaders")))

    async def _send(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        thread_id: str | None = None
        if content_type.startswith("application/json"):
            body = await _json_body(request)
            raw_text = body.get("raw")
            if not isinstance(raw_text, str) or not raw_text:
                return _error(400, "Invalid raw message", "INVALID_ARGUMENT")
            try:
                raw = b64url_decode(raw_text)
            except ValueError:
                return _error(400, "Invalid raw message", "INVALID_ARGUMENT")
            thread_id = body.get("threadId") or None
        elif content_type.startswith("multipart/related"):
            meta, raw = _split_related(await request.body(), content_type)
            thread_id = meta.get("threadId") or None
        else:
            raw = await request.body()
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        if not parsed.get("To"):
            return _error(400, "Invalid To header", "INVALID_ARGUMENT")
        with self.state.lock:
            if thread_id is not None and not any(m.thread_id == thread_id for m in self.state.messages.values()):
                return _error(404, "Requested entity was not found.", "NOT_FOUND")
            stored = self._add(raw, ["SENT"], thread_id)
        return JSONResponse({"id": stored.id, "threadId": stored.thread_id, "labelIds": ["SENT"]})

    async def _admin_inbox(self, request: Request) -> Response:
        raw = await request.body()
        if not raw:
            return JSONResponse({"error": "empty message"}, status_code=400)
        stored = self.deliver(raw)
        return JSONResponse({"id": stored.id, "threadId": stored.thread_id, "historyId": str(stored.history_id)})

    async def _admin_sent(self, request: Request) -> Response:
        return JSONResponse(
            {
                "messages": [
                    {"id": m.id, "threadId": m.thread_id, "raw": b64url(m.raw), "labelIds": m.label_ids}
                    for m in self.sent()
                ]
            }
        )

    async def _admin_fail(self, request: Request) -> Response:
        body = await _json_body(request)
        self.fail_next(int(body.get("count", 1)), int(body.get("status", 500)), body.get("path"))
        return JSONResponse({"ok": True})

    async def _admin_expire(self, request: Request) -> Response:
        self.expire_history()
        return JSONResponse({"historyId": str(self.history_id)})

    async def _admin_state(self, request: Request) -> Response:
        with self.state.lock:
            st = self.state
            return JSONResponse(
                {
                    "emailAddress": st.address,
                    "historyId": str(st.history_id),
                    "messages": len(st.messages),
                    "watches": len(st.watches),
                }
            )


class _FailureMiddleware:
    """Injected failures apply to the Gmail API routes only, never to /_fake/."""

    def __init__(self, app: Any, fake: FakeGmail) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_fake/"):
            with self.fake.state.lock:
                self.fake.state.requests.append((scope["method"], scope["path"]))
            status = self.fake._injected_failure(scope["path"])
            if status is not None:
                await _error(status, "Injected failure", "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def _rfc822msgid(query: str) -> str | None:
    for term in query.split():
        if term.startswith("rfc822msgid:"):
            return term.removeprefix("rfc822msgid:").strip("<>")
    return None


def _error(code: int, message: str, status: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "status": status, "errors": [{"message": message}]}},
        status_code=code,
    )


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _split_related(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes]:
    """multipart/related upload: a JSON metadata part, then the message/rfc822 media part."""
    container = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.compat32
    )
    parts = container.get_payload()
    meta: dict[str, Any] = {}
    raw = b""
    if isinstance(parts, list):
        for part in parts:
            if not isinstance(part, Message):
                continue
            payload = _part_bytes(part)
            if part.get_content_type() == "application/json":
                meta = json.loads(payload or b"{}")
            else:
                raw = payload
    return meta, raw


def _part_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _headers(msg: Message) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in msg.items()]


def _payload(msg: Message, part_id: str) -> dict[str, Any]:
    """A MIME part as Gmail's MessagePart: headers, body (data or attachmentId) and sub-parts."""
    filename = msg.get_filename() or ""
    out: dict[str, Any] = {
        "partId": part_id,
        "mimeType": msg.get_content_type(),
        "filename": filename,
        "headers": _headers(msg),
    }
    if msg.is_multipart():
        subparts = msg.get_payload()
        assert isinstance(subparts, list)
        out["body"] = {"size": 0}
        prefix = "" if part_id == "" else f"{part_id}."
        out["parts"] = [_payload(p, f"{prefix}{i}") for i, p in enumerate(subparts)]
        return out
    data = _part_bytes(msg)
    if filename:
        out["body"] = {"size": len(data), "attachmentId": f"att-{part_id or 0}-{len(data)}"}
    else:
        out["body"] = {"size": len(data), "data": b64url(data)} if data else {"size": 0}
    return out


def _snippet(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            data = _part_bytes(part)
            return " ".join(data.decode(part.get_content_charset() or "utf-8", "replace").split())[:200]
    return ""


def message_resource(stored: StoredMessage, fmt: str, metadata_headers: list[str] | None = None) -> dict[str, Any]:
    """A users.messages resource in the requested format, shaped like Gmail's."""
    out: dict[str, Any] = {**stored.ref(), "labelIds": list(stored.label_ids), "historyId": str(stored.history_id)}
    out["internalDate"] = str(stored.internal_date_ms)
    out["sizeEstimate"] = len(stored.raw)
    parsed = stored.parsed
    if fmt == "minimal":
        return out
    out["snippet"] = _snippet(parsed)
    if fmt == "raw":
        out["raw"] = b64url(stored.raw)
    elif fmt == "metadata":
        wanted = {h.lower() for h in metadata_headers or []}
        headers = [h for h in _headers(parsed) if not wanted or h["name"].lower() in wanted]
        out["payload"] = {"mimeType": parsed.get_content_type(), "headers": headers}
    else:
        out["payload"] = _payload(parsed, "")
    return out


def build_email(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    attachments: Mapping[str, tuple[str, bytes]] | None = None,
    authenticated: bool = True,
) -> bytes:
    """A raw RFC 822 message for tests and the demo: text (+ optional HTML) and attachments.

    `authenticated` stamps the Authentication-Results Gmail adds on receipt when the sender's
    domain passed DKIM, SPF and DMARC; False stamps the failures a spoofed From gets."""
    msg = EmailMessage()
    domain = sender.rsplit("@", 1)[-1].strip(">")
    outcome = "pass" if authenticated else "fail"
    msg["Authentication-Results"] = (
        f"mx.google.com; dkim={outcome} header.i=@{domain}; spf={outcome} smtp.mailfrom={sender}; "
        f"dmarc={outcome} (p=REJECT) header.from={domain}"
    )
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = message_id or f"<{secrets.token_hex(8)}@mail.example.com>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, (mime, data) in (attachments or {}).items():
        maintype, subtype = mime.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the local fake Gmail API.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--address", default="support@example.com")
    args = parser.parse_args()

    serve_until_interrupted(lambda: FakeGmail(args.address, args.port), "fake Gmail API")


if __name__ == "__main__":
    main()
