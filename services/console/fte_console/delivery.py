"""Live delivery status on the ticket page: the notifier's outcomes read from
`fte.deliveries.outcomes`, announced to the open pages of each ticket as server-sent events.

The page renders each reply's status as the agent stored it; this feed moves it on as the notifier
reports it (queued -> sent -> delivered or read, or failed). The agent applies the same events, so
a reload shows what the stream showed. Like the live queue, each console process reads the topic in
a group of its own from the newest record. It also remembers the latest status of the deliveries of
recent tickets: a page that subscribes just after an event (the reply was sent between the page's
render and its subscription) still gets it.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiokafka import ConsumerRecord
from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2
from fte_runtime import envelope
from fte_runtime.enums import value_names
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from fte_console.accounts import Session
from fte_console.live import MAX_PENDING, end, page_stream, push, read_event, sse

_OUTCOMES = (
    delivery_events_pb2.ReplyDelivered,
    delivery_events_pb2.DeliveryFailed,
    delivery_events_pb2.ReplyStatusChanged,
)
EVENT_TYPES = envelope.type_map(*_OUTCOMES)
STATUSES = value_names(common_pb2.DeliveryStatus)
# Tickets whose latest delivery statuses are remembered (the oldest are forgotten first).
REMEMBERED_TICKETS = 2000
_TICKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


def status_of(msg: object) -> int:
    """The delivery status an outcome event reports."""
    if isinstance(msg, delivery_events_pb2.ReplyDelivered):
        return common_pb2.DELIVERY_STATUS_SENT
    if isinstance(msg, delivery_events_pb2.DeliveryFailed):
        return common_pb2.DELIVERY_STATUS_FAILED
    assert isinstance(msg, delivery_events_pb2.ReplyStatusChanged)
    return int(msg.status)


class DeliveryFeed:
    """Fans each delivery outcome out to the open pages of its ticket in this process."""

    def __init__(self, remembered: int = REMEMBERED_TICKETS) -> None:
        self._pages: dict[str, set[asyncio.Queue[str]]] = {}
        self._known: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._remembered = remembered
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()

    def known(self, ticket: str) -> Mapping[str, int]:
        return dict(self._known.get(ticket, {}))

    def apply(self, ticket: str, delivery: str, status: int) -> bool:
        """Records a status and announces it; False when it would move the delivery backwards.
        The statuses are numbered in life order (failed last and final), as the agent keeps them."""
        statuses = self._known.setdefault(ticket, {})
        self._known.move_to_end(ticket)
        while len(self._known) > self._remembered:
            self._known.popitem(last=False)
        if status <= statuses.get(delivery, 0):
            return False
        statuses[delivery] = status
        text = sse("delivery", {"delivery": delivery, "status": STATUSES.get(status, "")})
        for page in self._pages.get(ticket, ()):
            push(page, text)
        return True

    async def handle(self, record: ConsumerRecord) -> None:
        event = read_event(record, EVENT_TYPES, "delivery")
        if event is None:
            return
        msg = event.message
        assert isinstance(msg, _OUTCOMES)
        if msg.ticket_id and msg.delivery:
            self.apply(msg.ticket_id, msg.delivery, status_of(msg))

    def close(self) -> None:
        """Ends every open stream (on shutdown: an open page must not hold the server's drain)."""
        self.closing.set()
        for pages in self._pages.values():
            end(pages)

    async def stream(
        self, ticket: str, still_signed_in: Callable[[], Awaitable[bool]], heartbeat: float
    ) -> AsyncIterator[str]:
        """One ticket page's stream: `ready` once the feed is live, the statuses known so far, then
        each change; a comment every `heartbeat` seconds, with the session checked then."""
        page: asyncio.Queue[str] = asyncio.Queue(MAX_PENDING)
        self._pages.setdefault(ticket, set()).add(page)

        def backlog() -> list[str]:
            return [
                sse("delivery", {"delivery": d, "status": STATUSES.get(status, "")})
                for d, status in self.known(ticket).items()
            ]

        try:
            async for text in page_stream(
                page, self.ready, self.closing, still_signed_in, heartbeat=heartbeat, backlog=backlog
            ):
                yield text
        finally:
            pages = self._pages.get(ticket)
            if pages is not None:
                pages.discard(page)
                if not pages:
                    del self._pages[ticket]


def ticket_events(
    session_of: Callable[[Request], Awaitable[Session | None]], headers: Mapping[str, str]
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of `/events/tickets/{ticket}`: 401 without a session, so a signed-out page's
    EventSource stops instead of retrying."""

    async def endpoint(request: Request) -> Response:
        ticket = request.path_params["ticket"]
        if not _TICKET.match(ticket):
            return PlainTextResponse("no such ticket", status_code=404, headers=headers)
        if await session_of(request) is None:
            return PlainTextResponse("sign in first", status_code=401, headers=headers)
        deps = request.app.state.deps

        async def still_signed_in() -> bool:
            return await session_of(request) is not None

        stream = deps.delivery.stream(ticket, still_signed_in, deps.settings.live_heartbeat_seconds)
        # no-transform and X-Accel-Buffering: a proxy must pass each event on at once.
        sse_headers = {**headers, "cache-control": "no-store, no-transform", "x-accel-buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=sse_headers)

    return endpoint
