"""Local stand-ins for the external providers in `make run` and the e2e stack: the fake Gmail API
as the support mailbox, the fake Twilio Messages API for WhatsApp replies (its status callbacks
go to the gateway, signed), and a local Google certs endpoint, plus the Pub/Sub push a real Gmail
watch would send: every mail delivered to the fake mailbox (POST /_fake/inbox) is announced to
the gateway's /webhooks/gmail with an OIDC token signed by the local key. What the fakes
received is listed by `python -m fte_stack outbox`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.error
import urllib.request

from fte_runtime.backoff import delay_for

from fte_stack.fakes.gmail import FakeGmail, StoredMessage
from fte_stack.fakes.google_certs import FakeGoogleCerts
from fte_stack.fakes.twilio import FakeTwilio

log = logging.getLogger("fte.stack")

MAILBOX = "support@example.com"
PUSH_SERVICE_ACCOUNT = "gmail-push@fte-local.iam.gserviceaccount.com"
TWILIO_ACCOUNT_SID = "AC" + "0" * 32
# The gateway's documented local default, so webhooks signed for a bare gateway verify here too.
TWILIO_AUTH_TOKEN = "local-dev-twilio-auth-token"  # noqa: S105 - a local credential, never a real one


class LocalProviders:
    def __init__(
        self, *, gmail_port: int, certs_port: int, twilio_port: int, gateway_port: int, callbacks: bool = True
    ) -> None:
        self.gmail = FakeGmail(MAILBOX, gmail_port)
        self.certs = FakeGoogleCerts(certs_port)
        self.twilio = FakeTwilio(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, callbacks=callbacks, port=twilio_port)
        self.push_url = f"http://127.0.0.1:{gateway_port}/webhooks/gmail"
        self.push_audience = self.push_url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pushes: set[asyncio.Future[None]] = set()

    async def start(self) -> dict[str, str]:
        """Start the fakes; what services need to know about them (StackInfo.extra)."""
        self._loop = asyncio.get_running_loop()
        await self.gmail.start()
        await self.certs.start()
        await self.twilio.start()
        self.gmail.on_delivered.append(self._announce)
        return {
            "twilio_api_url": self.twilio.url,
            "twilio_account_sid": TWILIO_ACCOUNT_SID,
            "twilio_auth_token": TWILIO_AUTH_TOKEN,
            "gmail_api_url": self.gmail.url,
            "gmail_address": MAILBOX,
            "google_certs_url": self.certs.certs_url,
            "gmail_push_audience": self.push_audience,
            "gmail_push_service_account": PUSH_SERVICE_ACCOUNT,
        }

    async def stop(self) -> None:
        for push in list(self._pushes):
            push.cancel()
        await self.gmail.stop()
        await self.certs.stop()
        await self.twilio.stop()

    def _announce(self, message: StoredMessage) -> None:
        """Called by the fake (any thread) after an inbound delivery: push like Pub/Sub would."""
        if self._loop is None or "SENT" in message.label_ids:
            return
        future = asyncio.run_coroutine_threadsafe(self.push(message.history_id), self._loop)
        wrapped = asyncio.wrap_future(future, loop=self._loop)
        self._loop.call_soon_threadsafe(self._pushes.add, wrapped)
        wrapped.add_done_callback(self._pushes.discard)

    async def push(self, history_id: int) -> None:
        """Announce mailbox history to the gateway as a Pub/Sub push (retried until accepted or given up)."""
        data = base64.b64encode(json.dumps({"emailAddress": MAILBOX, "historyId": history_id}).encode()).decode()
        body = json.dumps({"message": {"data": data, "messageId": str(history_id)}, "subscription": "local"}).encode()
        token = self.certs.sign_push_token(audience=self.push_audience, email=PUSH_SERVICE_ACCOUNT)
        request = urllib.request.Request(  # noqa: S310 - a loopback URL built here
            self.push_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        # Pub/Sub retries with backoff until the push endpoint accepts it.
        for attempt in range(8):
            try:
                await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
                return
            except (urllib.error.URLError, OSError) as exc:
                log.info("gmail push not accepted yet (%s); retrying", exc)
                await asyncio.sleep(delay_for(attempt + 1, base=0.5, cap=10))
