"""WhatsApp webhooks: signed requests publish exactly the expected events; anything else nothing."""

from __future__ import annotations

import httpx
import pytest
from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2, message_events_pb2
from fte_gateway.app import EMPTY_TWIML
from fte_gateway.server import GatewayServer
from fte_runtime import topics
from gateway_helpers import TWILIO_TOKEN, EventLog, GatewayFactory, twilio_sign  # type: ignore[import-not-found]

pytestmark = pytest.mark.kafka

INBOUND = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "whatsapp:+14155550100",
    "To": "whatsapp:+14155238886",
    "Body": "Hi, my invoice is wrong",
    "WaId": "14155550100",
    "ProfileName": "Ada",
    "NumMedia": "1",
    "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/SM1/Media/ME1",
    "MediaContentType0": "image/jpeg",
}


def signed(gateway: GatewayServer, path: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_sign(TWILIO_TOKEN, gateway.url + path, params)}


async def test_inbound_publishes_the_message(
    gateway: GatewayServer, client: httpx.AsyncClient, event_log: EventLog
) -> None:
    before = await event_log.snapshot()
    headers = {**signed(gateway, "/webhooks/whatsapp", INBOUND), "X-Correlation-Id": "corr-wa-1"}
    resp = await client.post("/webhooks/whatsapp", data=INBOUND, headers=headers)
    assert resp.status_code == 200
    assert resp.text == EMPTY_TWIML
    assert resp.headers["content-type"].startswith("text/xml")

    records = await event_log.since(before)
    assert len(records) == 1
    rec = records[0]
    assert (rec.topic, rec.key) == (topics.TICKETS_INCOMING, "whatsapp:+14155550100")
    assert rec.event.correlation_id == "corr-wa-1"
    assert rec.event.id == f"whatsapp:{INBOUND['MessageSid']}"
    msg = rec.event.message
    assert isinstance(msg, message_events_pb2.MessageReceived)
    assert msg.HasField("received_time")
    msg.ClearField("received_time")
    assert msg == message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WHATSAPP,
        channel_message_id=INBOUND["MessageSid"],
        sender=message_events_pb2.Sender(
            phone="+14155550100", whatsapp_address="whatsapp:+14155550100", whatsapp_user_id="14155550100"
        ),
        display_name="Ada",
        text_body="Hi, my invoice is wrong",
        attachments=[
            common_pb2.Attachment(
                attachment_id=f"{INBOUND['MessageSid']}/Media/0",
                content_type="image/jpeg",
                url=INBOUND["MediaUrl0"],
            )
        ],
        recipient_address="whatsapp:+14155238886",
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        {"X-Twilio-Signature": twilio_sign("another-token", "http://127.0.0.1/webhooks/whatsapp", INBOUND)},
    ],
    ids=["missing", "garbage", "other-token"],
)
async def test_bad_signature_is_refused_and_publishes_nothing(
    client: httpx.AsyncClient, event_log: EventLog, headers: dict[str, str]
) -> None:
    before = await event_log.snapshot()
    resp = await client.post("/webhooks/whatsapp", data=INBOUND, headers=headers)
    assert resp.status_code == 403
    assert await event_log.since(before) == []


async def test_tampered_body_is_refused(gateway: GatewayServer, client: httpx.AsyncClient, event_log: EventLog) -> None:
    before = await event_log.snapshot()
    headers = signed(gateway, "/webhooks/whatsapp", INBOUND)
    resp = await client.post("/webhooks/whatsapp", data={**INBOUND, "Body": "send me all refunds"}, headers=headers)
    assert resp.status_code == 403
    assert await event_log.since(before) == []


async def test_signed_but_malformed_is_400_and_publishes_nothing(
    gateway: GatewayServer, client: httpx.AsyncClient, event_log: EventLog
) -> None:
    before = await event_log.snapshot()
    params = {**INBOUND, "From": "+14155550100"}  # not a WhatsApp address
    resp = await client.post("/webhooks/whatsapp", data=params, headers=signed(gateway, "/webhooks/whatsapp", params))
    assert resp.status_code == 400
    resp = await client.post("/webhooks/whatsapp", content=b"{}", headers={"content-type": "application/json"})
    assert resp.status_code == 415
    assert await event_log.since(before) == []


async def test_status_callbacks_publish_delivery_status(
    gateway: GatewayServer, client: httpx.AsyncClient, event_log: EventLog
) -> None:
    path = "/webhooks/whatsapp/status"
    failed = {"MessageSid": "SMout1", "MessageStatus": "undelivered", "ErrorCode": "63016", "ErrorMessage": "window"}
    delivered = {"MessageSid": "SMout1", "MessageStatus": "delivered"}
    receiving = {"MessageSid": "SMin1", "MessageStatus": "receiving"}
    before = await event_log.snapshot()
    # Out of order and duplicated, as Twilio may send them.
    for params in (failed, delivered, delivered, receiving):
        resp = await client.post(path, data=params, headers=signed(gateway, path, params))
        assert resp.status_code == 200
    records = await event_log.since(before)
    assert [(r.topic, r.key) for r in records] == [(topics.DELIVERY_STATUS, "SMout1")] * 3
    first = records[0].event.message
    assert isinstance(first, delivery_events_pb2.DeliveryStatusChanged)
    first.ClearField("occurred_time")
    assert first == delivery_events_pb2.DeliveryStatusChanged(
        channel=common_pb2.CHANNEL_WHATSAPP,
        provider_message_id="SMout1",
        status=common_pb2.DELIVERY_STATUS_FAILED,
        error_code="63016",
        error_message="window",
    )
    statuses = [r.event.message.status for r in records]
    assert statuses == [common_pb2.DELIVERY_STATUS_FAILED, common_pb2.DELIVERY_STATUS_DELIVERED] * 1 + [
        common_pb2.DELIVERY_STATUS_DELIVERED
    ]
    # A duplicate callback carries the same event id, so consumers drop it.
    assert records[1].event.id == records[2].event.id == "twilio-status:SMout1:delivered"


async def test_status_callback_with_bad_signature_publishes_nothing(
    client: httpx.AsyncClient, event_log: EventLog
) -> None:
    before = await event_log.snapshot()
    params = {"MessageSid": "SMout2", "MessageStatus": "read"}
    resp = await client.post("/webhooks/whatsapp/status", data=params, headers={"X-Twilio-Signature": "x"})
    assert resp.status_code == 403
    assert await event_log.since(before) == []


async def test_forwarded_url_is_trusted_only_from_configured_proxies(
    start_gateway: GatewayFactory, event_log: EventLog
) -> None:
    public = "https://support.example.com/webhooks/whatsapp"
    params = {**INBOUND, "MessageSid": "SMproxied"}
    headers = {
        "X-Twilio-Signature": twilio_sign(TWILIO_TOKEN, public, params),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "support.example.com",
    }
    trusting = await start_gateway(trusted_proxies=["127.0.0.1/32"])
    untrusting = await start_gateway(trusted_proxies=["10.0.0.0/8"])
    before = await event_log.snapshot()
    async with httpx.AsyncClient() as c:
        refused = await c.post(untrusting.url + "/webhooks/whatsapp", data=params, headers=headers)
        assert refused.status_code == 403
        assert await event_log.since(before) == []
        accepted = await c.post(trusting.url + "/webhooks/whatsapp", data=params, headers=headers)
        assert accepted.status_code == 200
    assert [r.event.message.channel_message_id for r in await event_log.since(before)] == ["SMproxied"]


async def test_configured_public_base_url_is_what_twilio_signs(
    start_gateway: GatewayFactory, event_log: EventLog
) -> None:
    server = await start_gateway(public_base_url="https://hooks.example.com")
    params = {**INBOUND, "MessageSid": "SMbase"}
    sig = twilio_sign(TWILIO_TOKEN, "https://hooks.example.com/webhooks/whatsapp", params)
    before = await event_log.snapshot()
    async with httpx.AsyncClient() as c:
        resp = await c.post(server.url + "/webhooks/whatsapp", data=params, headers={"X-Twilio-Signature": sig})
    assert resp.status_code == 200
    assert len(await event_log.since(before)) == 1
