"""A local fake of the Twilio Messages API (2010-04-01), for the `twilio` SDK.

Point the real client at it with a `TwilioHttpClient` that rewrites `https://api.twilio.com` to
`fake.url`. Implemented:
  POST /2010-04-01/Accounts/{sid}/Messages.json   To, From, Body | ContentSid + ContentVariables,
                                                  StatusCallback; HTTP basic auth (sid, token)
  GET  /2010-04-01/Accounts/{sid}/Messages.json   list, filters To, From, DateSent>, DateSent<
  GET  /2010-04-01/Accounts/{sid}/Messages/{MessageSid}.json
Errors are Twilio-shaped JSON (`code`, `message`, `status`, `more_info`): 20003 bad credentials,
21211 invalid 'To' number, 21602 no body, 21617 body over 1600 characters.

Failure injection (thread-safe methods, or POST /_fake/fail {"count", "status"}):
  fail_next(n, status)        the next n sends answer `status` (500 by default) and are not accepted
  invalid_numbers             numbers answered with error 21211
  stall_after_accept(n, s)    the next n sends are recorded, then the answer waits `s` seconds
                              (the window where a sender can crash after the provider accepted)
Status callbacks: with `callbacks=True` every accepted message's StatusCallback gets `sent` then
`delivered`, signed with X-Twilio-Signature; `send_status(sid, status)` posts one on demand.
GET /_fake/messages lists what was accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fte_stack.fakes._http import LocalHttpServer, serve_until_interrupted

API = "/2010-04-01/Accounts/{account}"
MAX_BODY = 1600


@dataclass
class FakeMessage:
    sid: str
    to: str
    from_: str
    body: str
    content_sid: str
    content_variables: str
    status_callback: str
    date_sent: datetime
    received_at: float  # time.time() when the request arrived
    status: str = "queued"

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": str(max(1, -(-len(self.body) // 153))),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": format_datetime(self.date_sent, usegmt=True),
            "date_updated": format_datetime(self.date_sent, usegmt=True),
            "date_sent": format_datetime(self.date_sent, usegmt=True),
            "error_code": None,
            "error_message": None,
            "price": None,
            "price_unit": "USD",
            "messaging_service_sid": None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {},
        }


@dataclass
class TwilioState:
    messages: list[FakeMessage] = field(default_factory=list)
    attempts: int = 0  # every POST, accepted or not
    fail_remaining: int = 0
    fail_status: int = 500
    stall_remaining: int = 0
    stall_seconds: float = 0.0
    invalid_numbers: set[str] = field(default_factory=set)
    callbacks_sent: list[tuple[str, str]] = field(default_factory=list)  # (sid, status)
    lock: threading.Lock = field(default_factory=threading.Lock)


_sids = itertools.count(int(time.time() * 1000))


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status_code=status,
    )


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by the sorted POST parameters."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


SUPPORT_WHATSAPP = "whatsapp:+14155238886"  # the sandbox number the stack's notifier sends from


def inbound_whatsapp(
    url: str, phone: str, body: str, *, auth_token: str, sid: str = "", name: str = "Rosa"
) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers Twilio POSTs to `url` for a WhatsApp message from `phone` (E.164),
    signed with `auth_token` as Twilio signs it. A retry of the same message keeps its `sid`."""
    sid = sid or "SM" + secrets.token_hex(16)
    params = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": f"whatsapp:{phone}",
        "To": SUPPORT_WHATSAPP,
        "Body": body,
        "NumMedia": "0",
        "ProfileName": name,
        "WaId": phone.lstrip("+"),
    }
    return params, {"X-Twilio-Signature": sign(auth_token, url, params)}


def _parse_time(text: str) -> datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(text)


class FakeTwilio:
    """The fake server plus a thread-safe view of what it accepted."""

    def __init__(
        self,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "fake-twilio-token",  # noqa: S107 - the fake's own test credential
        *,
        callbacks: bool = False,
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callbacks = callbacks
        self.state = TwilioState()
        self._server = LocalHttpServer(self.app(), port=port)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return self._server.url

    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()

    # -- thread-safe helpers for tests -------------------------------------------------------

    def messages(self) -> list[FakeMessage]:
        with self.state.lock:
            return list(self.state.messages)

    @property
    def attempts(self) -> int:
        with self.state.lock:
            return self.state.attempts

    def fail_next(self, count: int, status: int = 500) -> None:
        with self.state.lock:
            self.state.fail_remaining = count
            self.state.fail_status = status

    def stall_after_accept(self, count: int, seconds: float) -> None:
        with self.state.lock:
            self.state.stall_remaining = count
            self.state.stall_seconds = seconds

    def add_invalid_number(self, number: str) -> None:
        with self.state.lock:
            self.state.invalid_numbers.add(number.removeprefix("whatsapp:"))

    async def send_status(self, sid: str, status: str) -> int:
        """POST a status callback for `sid`, signed as Twilio signs it; the HTTP status."""
        with self.state.lock:
            msg = next(m for m in self.state.messages if m.sid == sid)
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "From": msg.from_,
            "To": msg.to,
            "ApiVersion": "2010-04-01",
        }
        signature = sign(self.auth_token, msg.status_callback, params)
        request = urllib.request.Request(  # noqa: S310 - a loopback URL the test configured
            msg.status_callback,
            data=urllib.parse.urlencode(params).encode(),
            headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        )

        def post() -> int:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        code = await asyncio.to_thread(post)
        with self.state.lock:
            self.state.callbacks_sent.append((sid, status))
        return code

    # -- the HTTP app ----------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"{API}/Messages.json", self._create, methods=["POST"]),
                Route(f"{API}/Messages.json", self._list, methods=["GET"]),
                Route(f"{API}/Messages/{{sid}}.json", self._get, methods=["GET"]),
                Route("/_fake/messages", self._admin_messages, methods=["GET"]),
                Route("/_fake/fail", self._admin_fail, methods=["POST"]),
            ]
        )

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        header = request.headers.get("authorization", "")
        return (
            secrets.compare_digest(header, f"Basic {expected}")
            and request.path_params.get("account") == self.account_sid
        )

    async def _create(self, request: Request) -> Response:
        received_at = time.time()
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        to, from_ = fields.get("To", ""), fields.get("From", "")
        body, content_sid = fields.get("Body", ""), fields.get("ContentSid", "")
        with self.state.lock:
            st = self.state
            st.attempts += 1
            if st.fail_remaining > 0:
                st.fail_remaining -= 1
                status = st.fail_status
                return _error(status, 20500 if status >= 500 else 20001, "Injected failure")
            if not to:
                return _error(400, 21604, "A 'To' phone number is required.")
            if not from_:
                return _error(400, 21603, "A 'From' phone number is required.")
            if to.removeprefix("whatsapp:") in st.invalid_numbers:
                return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            if not body and not content_sid:
                return _error(400, 21602, "Message body is required.")
            if len(body) > MAX_BODY:
                return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
            if content_sid:
                body = f"[template {content_sid}] {fields.get('ContentVariables', '')}"
            msg = FakeMessage(
                sid=f"SM{next(_sids):032x}",
                to=to,
                from_=from_,
                body=body,
                content_sid=content_sid,
                content_variables=fields.get("ContentVariables", ""),
                status_callback=fields.get("StatusCallback", ""),
                date_sent=datetime.now(UTC),
                received_at=received_at,
            )
            st.messages.append(msg)
            stall = st.stall_seconds if st.stall_remaining > 0 else 0.0
            st.stall_remaining = max(0, st.stall_remaining - 1)
        if stall:
            await asyncio.sleep(stall)
        if self.callbacks and msg.status_callback:
            task = asyncio.create_task(self._callbacks(msg.sid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse(msg.resource(self.account_sid), status_code=201)

    async def _callbacks(self, sid: str) -> None:
        for status in ("sent", "delivered"):
            await asyncio.sleep(0.05)
            try:
                await self.send_status(sid, status)
            except OSError:
                return  # the receiver is gone

    async def _list(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        q = request.query_params
        try:
            after = _parse_time(q["DateSent>"]) if "DateSent>" in q else None
            before = _parse_time(q["DateSent<"]) if "DateSent<" in q else None
        except ValueError:
            return _error(400, 20001, "Invalid DateSent")
        page_size = min(int(q.get("PageSize", "50")), 1000)
        with self.state.lock:
            found = [
                m
                for m in reversed(self.state.messages)
                if (not q.get("To") or m.to == q["To"])
                and (not q.get("From") or m.from_ == q["From"])
                and (after is None or m.date_sent >= after)
                and (before is None or m.date_sent <= before)
            ][:page_size]
            resources = [m.resource(self.account_sid) for m in found]
        return JSONResponse(
            {
                "messages": resources,
                "page": 0,
                "page_size": page_size,
                "first_page_uri": request.url.path,
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": request.url.path,
                "start": 0,
                "end": max(len(resources) - 1, 0),
            }
        )

    async def _get(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        with self.state.lock:
            msg = next((m for m in self.state.messages if m.sid == request.path_params["sid"]), None)
        if msg is None:
            return _error(404, 20404, "The requested resource was not found")
        return JSONResponse(msg.resource(self.account_sid))

    async def _admin_messages(self, request: Request) -> Response:
        return JSONResponse({"messages": [m.resource(self.account_sid) for m in self.messages()]})

    async def _admin_fail(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = {}
        self.fail_next(int(body.get("count", 1)), int(body.get("status", 500)))
        return JSONResponse({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the local fake Twilio Messages API.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default="fake-twilio-token")
    parser.add_argument("--callbacks", action="store_true", help="post sent/delivered status callbacks")
    args = parser.parse_args()

    serve_until_interrupted(
        lambda: FakeTwilio(args.account_sid, args.auth_token, callbacks=args.callbacks, port=args.port),
        "fake Twilio API",
    )


if __name__ == "__main__":
    main()
