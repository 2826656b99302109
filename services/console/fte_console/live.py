"""The live queue: escalations read from `fte.tickets.escalated`, announced to every open queue
page as server-sent events.

Each console process reads the topic in a consumer group of its own (every process must see every
escalation), starting from the newest record: an open page learns of what is escalated while it is
open; what came before is in the page it loaded. An event only names the ticket: the page then
re-reads itself, so there is one way a queue row is rendered (and filtered, and ordered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from fte.common.v1 import common_pb2
from fte.events.v1 import ticket_events_pb2
from fte_runtime import envelope
from fte_runtime.backoff import Backoff
from fte_runtime.enums import value_names
from fte_runtime.kafka import consume, make_consumer
from fte_runtime.settings import KafkaSettings
from fte_runtime.topics import TICKETS_ESCALATED
from google.protobuf.message import Message

log = logging.getLogger("fte.console.live")

EVENT_TYPES = {ticket_events_pb2.TicketEscalated.DESCRIPTOR.full_name: ticket_events_pb2.TicketEscalated}
REASONS = value_names(common_pb2.EscalationReason)
CHANNELS = value_names(common_pb2.Channel)
# Events a page has not read yet; beyond that the oldest go (a page re-reads itself on any event,
# so a dropped announcement loses nothing).
MAX_PENDING = 100
_END = ""


def sse(event: str, data: object, event_id: str = "") -> str:
    """One server-sent event (JSON data on one line)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def push(page: asyncio.Queue[str], text: str) -> None:
    """Queues an event for one page, dropping its oldest when it is MAX_PENDING behind."""
    with contextlib.suppress(asyncio.QueueEmpty):
        if page.full():
            page.get_nowait()
    page.put_nowait(text)


def read_event(record: ConsumerRecord, types: Mapping[str, type[Message]], view: str) -> envelope.Event | None:
    """The record's event, or None for one this view cannot read: the topic is another service's,
    so such a record is skipped (and logged), never re-sent or dead-lettered from here."""
    try:
        return envelope.decode(record.value, record.headers, types)
    except envelope.InvalidEvent as exc:
        log.warning("%s record skipped", view, extra={"offset": record.offset, "error": str(exc)[:300]})
        return None


def end(pages: Iterable[asyncio.Queue[str]]) -> None:
    """Ends these pages' streams (on shutdown: an open page must not hold the server's drain)."""
    for page in pages:
        push(page, _END)


async def page_stream(
    page: asyncio.Queue[str],
    ready: asyncio.Event,
    closing: asyncio.Event,
    still_signed_in: Callable[[], Awaitable[bool]],
    *,
    heartbeat: float,
    backlog: Callable[[], Iterable[str]] = tuple,
) -> AsyncIterator[str]:
    """One page's stream: `ready` once its feed is live, the `backlog` it reads then, then each
    event queued for the page; a comment every `heartbeat` seconds keeps proxies from closing it,
    and the session is checked again then."""
    yield "retry: 3000\n\n"
    while not ready.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), heartbeat)
        if closing.is_set() or not await still_signed_in():
            return
        yield ": waiting for the feed\n\n"
    yield sse("ready", {})
    for text in backlog():
        yield text
    while True:
        try:
            text = await asyncio.wait_for(page.get(), heartbeat)
        except TimeoutError:
            if not await still_signed_in():
                return
            yield ": keep-alive\n\n"
            continue
        if text == _END:
            return
        yield text


class LiveFeed:
    """Fans each escalation out to the open queue pages of this process."""

    def __init__(self) -> None:
        self._pages: set[asyncio.Queue[str]] = set()
        # Set once the consumer has its partitions and their positions: from then on no
        # escalation is missed, and pages are told they are live.
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()

    @property
    def pages(self) -> int:
        return len(self._pages)

    def announce(self, text: str) -> None:
        for page in self._pages:
            push(page, text)

    def close(self) -> None:
        """Ends every open stream."""
        self.closing.set()
        end(self._pages)

    async def handle(self, record: ConsumerRecord) -> None:
        event = read_event(record, EVENT_TYPES, "escalation")
        if event is None:
            return
        msg = event.message
        assert isinstance(msg, ticket_events_pb2.TicketEscalated)
        data = {
            "ticket": msg.ticket.removeprefix("tickets/"),
            "reason": REASONS.get(msg.reason, ""),
            "channel": CHANNELS.get(msg.channel, ""),
        }
        self.announce(sse("escalated", data, event.id))

    async def stream(self, still_signed_in: Callable[[], Awaitable[bool]], heartbeat: float) -> AsyncIterator[str]:
        """One page's stream: `ready` once the feed is live, then each escalation; a comment every
        `heartbeat` seconds keeps proxies from closing it, and the session is checked again then."""
        page: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING)
        self._pages.add(page)
        try:
            async for text in page_stream(page, self.ready, self.closing, still_signed_in, heartbeat=heartbeat):
                yield text
        finally:
            self._pages.discard(page)


class Feed(Protocol):
    """What `run_feed` fills: a handler per record, and `ready` once it reads from the newest."""

    ready: asyncio.Event

    async def handle(self, record: ConsumerRecord) -> None: ...


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.event.clear()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.event.set()


async def _until_positioned(consumer: AIOKafkaConsumer, assigned: _Assigned, feed: Feed) -> None:
    await assigned.event.wait()
    for tp in consumer.assignment():
        await consumer.position(tp)  # waits for the `latest` offset to be looked up
    feed.ready.set()


async def run_feed(
    settings: KafkaSettings, feed: Feed, group_prefix: str, stopping: asyncio.Event, topic: str = TICKETS_ESCALATED
) -> None:
    """Reads `topic` (escalations by default) until `stopping` is set; a broker that is down is
    retried with back-off (the pages work without live updates meanwhile)."""
    backoff = Backoff(0.5, 10.0)
    while not stopping.is_set():
        consumer = make_consumer(settings, f"{group_prefix}-{uuid.uuid4().hex[:12]}", offset_reset="latest")
        assigned = _Assigned()
        consumer.subscribe([topic], listener=assigned)
        watcher = asyncio.create_task(_until_positioned(consumer, assigned, feed))
        try:
            # No producer: one group per process means each process would dead-letter the same record.
            await consume(consumer, feed.handle, None, stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live feed failed; reconnecting")
            feed.ready.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if not await backoff.wait(stopping):
            return
