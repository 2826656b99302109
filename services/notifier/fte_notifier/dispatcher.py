"""The dispatcher: claims queued deliveries and hands them to the providers.

Nothing lost: a delivery stays queued until every part is recorded as accepted; a crashed
dispatcher's lease runs out and another (or the restarted one) picks the delivery up.
Nothing sent twice: each part is marked `sending` (committed) before its provider call and
`sent` with the provider's id right after; a part found `sending` is looked up at the provider
(Gmail by its Message-ID header, Twilio by recipient, body and time) before it is sent again.
What remains: a crash after the provider accepted a part but before it is visible to the lookup
(Twilio's list can lag a little), or a Twilio template message (recognised by recipient and time
only) can still produce a duplicate or, for templates, a wrongly assumed send within that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fte.common.v1 import common_pb2
from fte_runtime import tracing
from fte_runtime.backoff import delay_for
from fte_runtime.context import correlation_id_var, new_correlation_id
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from fte_notifier.mime import build_email, gmail_raw
from fte_notifier.providers import GmailSender, PermanentError, TransientError, WhatsAppSender
from fte_notifier.settings import NotifierSettings
from fte_notifier.splitting import split_message
from fte_notifier.store import CHANNEL_NAMES, Delivery, LeaseLost, Part, Store

log = logging.getLogger("fte.notifier.dispatcher")

T = TypeVar("T")

DISPATCHED = Counter("notifier_dispatch_total", "Delivery attempts by channel and outcome.", ["channel", "outcome"])
PROVIDER_SECONDS = Histogram(
    "notifier_provider_call_seconds",
    "Duration of provider calls.",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def backoff_seconds(attempt: int, base: float, maximum: float) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    delay = delay_for(attempt, base=base, cap=maximum)
    return delay / 2 + random.uniform(0, delay / 2)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        settings: NotifierSettings,
        gmail: GmailSender | None = None,
        whatsapp: WhatsAppSender | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.gmail = gmail if gmail is not None else (GmailSender(settings) if settings.gmail_configured else None)
        self.whatsapp = (
            whatsapp if whatsapp is not None else (WhatsAppSender(settings) if settings.twilio_configured else None)
        )
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(settings.provider_threads, thread_name_prefix="notifier-provider")
        self._inflight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Something was queued: look now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and dispatch until cancelled; on cancel, let in-flight deliveries finish."""
        try:
            while True:
                free = self.settings.dispatch_concurrency - len(self._inflight)
                claimed: list[Delivery] = []
                if free > 0:
                    try:
                        claimed = await self.store.claim(
                            self.owner, min(free, self.settings.dispatch_batch_size), self.settings.lease_seconds
                        )
                    except Exception as exc:  # the database restarting, say: keep going
                        log.warning("claim failed; will retry", extra={"error": type(exc).__name__})
                        await asyncio.sleep(self.settings.dispatch_poll_seconds)
                for delivery in claimed:
                    task = asyncio.create_task(self._process(delivery))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.dispatch_poll_seconds)
        except asyncio.CancelledError:
            await self.drain()
            raise

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def drain(self, timeout: float | None = None) -> None:
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout or self.settings.provider_timeout_seconds + 1)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, provider: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            with tracing.span(f"{provider} {fn.__name__}", kind=SpanKind.CLIENT, attributes={"peer.service": provider}):
                # The SDK runs in a thread: it gets this task's context, so its HTTP call (the
                # requests instrumentation) is a child of the span above.
                call = contextvars.copy_context().run
                return await asyncio.get_running_loop().run_in_executor(self._executor, call, fn, *args)
        finally:
            PROVIDER_SECONDS.labels(provider).observe(time.perf_counter() - started)

    # --- one delivery ---------------------------------------------------------------------------

    async def _process(self, d: Delivery) -> None:
        # Each delivery runs in its own task: its logs and outcome carry its SendMessage's id.
        correlation_id_var.set(d.correlation_id or new_correlation_id())
        # The attempt continues the trace of the SendMessage that queued the delivery.
        with tracing.span("deliver", parent=d.trace_context, attributes={"delivery": str(d.id), "attempt": d.attempts}):
            try:
                await self._attempt(d)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Even the bookkeeping failed (database down): the lease runs out and the delivery
                # is claimed again; a part left `sending` is looked up before it is resent.
                log.exception("delivery attempt could not be recorded", extra={"delivery": str(d.id)})

    async def _attempt(self, d: Delivery) -> None:
        channel = CHANNEL_NAMES.get(d.channel, "unknown")
        try:
            if d.attempts > self.settings.max_attempts:
                # Claimed again after crashes or lost leases more often than retries allow.
                await self.store.fail(
                    d,
                    self.owner,
                    f"gave up after {d.attempts - 1} attempts: {d.last_error}".strip(": "),
                    d.last_error_code,
                    permanent=False,
                )
                DISPATCHED.labels(channel, "gave_up").inc()
                return
            parts = d.parts
            if d.local_only:
                ids = [f"local-{d.id}-{p.part_no}" for p in parts]
                last: int | None = None  # every part recorded by complete()
            else:
                payloads = self._payloads(d)
                ids = []
                for part, payload in zip(parts[:-1], payloads[:-1], strict=True):
                    pid = await self._deliver_part(d, part, payload)
                    if part.state != "sent":
                        await self.store.part_sent(d.id, part.part_no, pid)
                    ids.append(pid)
                # The last part's id is recorded together with the delivery's completion.
                ids.append(await self._deliver_part(d, parts[-1], payloads[-1]))
                last = parts[-1].part_no
            if await self.store.complete(d, self.owner, ids, last):
                DISPATCHED.labels(channel, "sent").inc()
        except PermanentError as exc:
            await self.store.fail(d, self.owner, exc.reason, exc.code, permanent=True)
            DISPATCHED.labels(channel, "failed").inc()
            log.info("delivery failed permanently", extra={"delivery": str(d.id), "code": exc.code})
        except TransientError as exc:
            await self._retry_or_give_up(d, exc.reason, exc.code, channel)
        except LeaseLost:
            DISPATCHED.labels(channel, "lease_lost").inc()
            log.warning("lease lost; another dispatcher has the delivery", extra={"delivery": str(d.id)})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery attempt crashed", extra={"delivery": str(d.id)})
            await self._retry_or_give_up(d, "internal error", "", channel)

    async def _retry_or_give_up(self, d: Delivery, reason: str, code: str, channel: str) -> None:
        if d.attempts >= self.settings.max_attempts:
            await self.store.fail(
                d, self.owner, f"gave up after {d.attempts} attempts: {reason}", code, permanent=False
            )
            DISPATCHED.labels(channel, "gave_up").inc()
            given_up = {"delivery": str(d.id), "attempts": d.attempts, "reason": reason, "code": code}
            log.warning("delivery given up", extra=given_up)
            return
        delay = backoff_seconds(d.attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        await self.store.retry_later(d.id, self.owner, reason, code, delay)
        DISPATCHED.labels(channel, "retry").inc()
        log.info(
            "delivery will be retried",
            extra={"delivery": str(d.id), "reason": reason, "code": code, "in_s": round(delay, 2)},
        )

    async def _deliver_part(self, d: Delivery, part: Part, payload: dict[str, Any]) -> str:
        """The provider's id for the part: recorded earlier, found at the provider, or sent now."""
        if part.state == "sent" and part.provider_message_id:
            return part.provider_message_id
        if part.state == "sending":
            # An earlier attempt's outcome is unknown: ask the provider before sending again.
            found = await self._find(d, part, payload)
            if found is not None:
                log.info("in-flight part found at the provider", extra={"delivery": str(d.id), "part": part.part_no})
                return found
        await self.store.begin_part(d.id, part.part_no, self.owner, self.settings.lease_seconds)
        try:
            return await self._send(d, payload)
        except TransientError as exc:
            if not exc.uncertain:
                await self.store.part_not_sent(d.id, part.part_no)
            raise
        except PermanentError:
            await self.store.part_not_sent(d.id, part.part_no)
            raise

    def _payloads(self, d: Delivery) -> list[dict[str, Any]]:
        if d.channel == common_pb2.CHANNEL_WHATSAPP:
            if d.template:
                return [{"body": None, "template": d.template}]
            return [{"body": text, "template": None} for text in split_message(d.text_body)]
        # Email, and the web form's copy to the submitter: one message, threaded when replying.
        message_id = f"{d.id}@{self.settings.message_id_domain}"
        msg = build_email(
            sender=self.settings.gmail_sender,
            recipient=d.recipient,
            subject=d.subject,
            text=d.text_body,
            message_id=message_id,
            reply_to=d.reply_to,
        )
        return [
            {
                "raw": gmail_raw(msg),
                "message_id": message_id,
                "thread_id": (d.reply_to or {}).get("gmail_thread_id", ""),
            }
        ]

    async def _send(self, d: Delivery, payload: dict[str, Any]) -> str:
        if d.channel == common_pb2.CHANNEL_WHATSAPP:
            assert self.whatsapp is not None
            template = payload["template"] or {}
            return await self._call(
                "twilio",
                self.whatsapp.send,
                d.recipient,
                payload["body"],
                template.get("content_sid"),
                template.get("variables"),
            )
        assert self.gmail is not None
        return await self._call("gmail", self.gmail.send, payload["raw"], payload["thread_id"])

    async def _find(self, d: Delivery, part: Part, payload: dict[str, Any]) -> str | None:
        if d.channel == common_pb2.CHANNEL_WHATSAPP:
            assert self.whatsapp is not None
            since = part.attempt_started_at
            assert since is not None
            return await self._call("twilio", self.whatsapp.find, d.recipient, payload["body"], since)
        assert self.gmail is not None
        return await self._call("gmail", self.gmail.find, payload["message_id"])
