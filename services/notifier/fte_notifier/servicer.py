"""NotifierService: SendMessage queues into the outbox and returns; Get/List read it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fte.notifier.v1 import notifier_pb2, notifier_service_pb2, notifier_service_pb2_grpc
from fte_runtime.errors import AlreadyExists, NotFound
from fte_runtime.names import make_name, parse_name
from fte_runtime.pagination import Page, page_size

from fte_notifier.settings import NotifierSettings
from fte_notifier.store import Delivery, Store
from fte_notifier.validation import validate

COLLECTION = "deliveries"


def to_proto(d: Delivery) -> notifier_pb2.Delivery:
    out = notifier_pb2.Delivery(
        name=make_name(COLLECTION, d.id),
        request_id=d.request_id,
        channel=d.channel,
        recipient=d.recipient,
        subject=d.subject,
        text_body=d.text_body,
        ticket_id=d.ticket_id,
        status=d.status,
        provider_message_ids=d.provider_message_ids,
        attempts=d.attempts,
        last_error=d.last_error,
        local_only=d.local_only,
        part_count=d.part_count,
    )
    out.create_time.FromDatetime(d.create_time)
    out.update_time.FromDatetime(d.update_time)
    if d.sent_time is not None:
        out.sent_time.FromDatetime(d.sent_time)
    return out


class NotifierServicer(notifier_service_pb2_grpc.NotifierServiceServicer):
    def __init__(self, store: Store, settings: NotifierSettings, on_queued: Callable[[], None]) -> None:
        self.store = store
        self.settings = settings
        self.on_queued = on_queued

    async def SendMessage(
        self, request: notifier_service_pb2.SendMessageRequest, context: Any
    ) -> notifier_service_pb2.SendMessageResponse:
        new = validate(request, self.settings)
        delivery, duplicate = await self.store.insert(new)
        if duplicate and delivery.fingerprint != new.fingerprint:
            raise AlreadyExists("request_id was already used for a different message", reason="REQUEST_ID_REUSED")
        if not duplicate:
            self.on_queued()
        return notifier_service_pb2.SendMessageResponse(delivery=to_proto(delivery), duplicate=duplicate)

    async def GetDelivery(
        self, request: notifier_service_pb2.GetDeliveryRequest, context: Any
    ) -> notifier_service_pb2.GetDeliveryResponse:
        raw_id = parse_name(request.name, COLLECTION)
        try:
            delivery_id = uuid.UUID(raw_id)
        except ValueError:
            raise NotFound(f"{request.name} does not exist", reason="DELIVERY_NOT_FOUND") from None
        delivery = await self.store.get(delivery_id)
        if delivery is None:
            raise NotFound(f"{request.name} does not exist", reason="DELIVERY_NOT_FOUND")
        return notifier_service_pb2.GetDeliveryResponse(delivery=to_proto(delivery))

    async def ListDeliveries(
        self, request: notifier_service_pb2.ListDeliveriesRequest, context: Any
    ) -> notifier_service_pb2.ListDeliveriesResponse:
        filters = {"ticket_id": request.ticket_id, "channel": request.channel, "status": request.status}
        page = Page(page_size(request.page_size), request.page_token, filters)
        rows = await self.store.list_deliveries(
            limit=page.limit,
            before_seq=None if page.position is None else int(page.position),
            ticket_id=request.ticket_id,
            channel=request.channel,
            status=request.status,
        )
        deliveries, token = page.cut(rows, lambda d: d.seq)
        return notifier_service_pb2.ListDeliveriesResponse(
            deliveries=[to_proto(d) for d in deliveries], next_page_token=token
        )
