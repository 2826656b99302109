"""Provider payloads into `fte.events.v1` messages, and the record key of each (the customer's
channel identity, so one customer's messages stay in order)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from fte.common.v1 import common_pb2
from fte.events.v1 import delivery_events_pb2, message_events_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from fte_gateway.forms import SupportForm
from fte_gateway.mime import ParsedEmail

MAX_WHATSAPP_MEDIA = 10


@dataclass(frozen=True)
class Outgoing:
    """One event to publish: topic, key and a deterministic event id (retries reuse it)."""

    topic: str
    key: str
    event_id: str
    message: message_events_pb2.MessageReceived | delivery_events_pb2.DeliveryStatusChanged


def _timestamp(when: datetime | None = None) -> Timestamp:
    if when is not None:
        ts = Timestamp()
        ts.FromDatetime(when)
        return ts
    # Now, straight from the clock: a quarter of the cost of going through a datetime.
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def email_key(address: str) -> str:
    return f"email:{address.strip().casefold()}"


def from_email(mail: ParsedEmail, mailbox: str) -> tuple[str, message_events_pb2.MessageReceived]:
    received = datetime.fromtimestamp(mail.internal_date_ms / 1000, UTC) if mail.internal_date_ms else datetime.now(UTC)
    msg = message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_EMAIL,
        channel_message_id=mail.gmail_id,
        sender=message_events_pb2.Sender(email=mail.from_address, email_authenticated=mail.authenticated),
        display_name=mail.from_name,
        subject=mail.subject,
        text_body=mail.text,
        attachments=[
            common_pb2.Attachment(
                attachment_id=a.attachment_id, filename=a.filename, content_type=a.content_type, size_bytes=a.size_bytes
            )
            for a in mail.attachments
        ],
        email_thread=common_pb2.EmailThread(
            message_id=mail.message_id,
            in_reply_to=mail.in_reply_to,
            references=list(mail.references),
            gmail_thread_id=mail.thread_id,
        ),
        received_time=_timestamp(received),
        recipient_address=mailbox,
    )
    return email_key(mail.from_address), msg


class InvalidWebhook(ValueError):
    """A signed provider request that lacks what the contract needs."""


def from_whatsapp(form: Mapping[str, str]) -> tuple[str, message_events_pb2.MessageReceived]:
    sid = form.get("MessageSid", "").strip()
    sender = form.get("From", "").strip()
    if not sid:
        raise InvalidWebhook("MessageSid is missing")
    if not sender.startswith("whatsapp:") or len(sender) <= len("whatsapp:"):
        raise InvalidWebhook("From is not a WhatsApp address")
    phone = sender.removeprefix("whatsapp:")
    try:
        media_count = min(int(form.get("NumMedia", "0") or 0), MAX_WHATSAPP_MEDIA)
    except ValueError as exc:
        raise InvalidWebhook("NumMedia is not a number") from exc
    attachments = [
        common_pb2.Attachment(
            attachment_id=f"{sid}/Media/{i}",
            content_type=form.get(f"MediaContentType{i}", ""),
            url=form.get(f"MediaUrl{i}", ""),
        )
        for i in range(media_count)
        if form.get(f"MediaUrl{i}")
    ]
    msg = message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WHATSAPP,
        channel_message_id=sid,
        sender=message_events_pb2.Sender(
            phone=phone if phone.startswith("+") else "",
            whatsapp_address=sender,
            whatsapp_user_id=form.get("WaId", ""),
        ),
        display_name=form.get("ProfileName", ""),
        text_body=form.get("Body", ""),
        attachments=attachments,
        received_time=_timestamp(),
        recipient_address=form.get("To", ""),
    )
    return sender, msg


# Twilio MessageStatus values -> our delivery status. Others (e.g. "receiving") are not outbound.
_STATUS = {
    "accepted": common_pb2.DELIVERY_STATUS_QUEUED,
    "scheduled": common_pb2.DELIVERY_STATUS_QUEUED,
    "queued": common_pb2.DELIVERY_STATUS_QUEUED,
    "sending": common_pb2.DELIVERY_STATUS_QUEUED,
    "sent": common_pb2.DELIVERY_STATUS_SENT,
    "delivered": common_pb2.DELIVERY_STATUS_DELIVERED,
    "read": common_pb2.DELIVERY_STATUS_READ,
    "failed": common_pb2.DELIVERY_STATUS_FAILED,
    "undelivered": common_pb2.DELIVERY_STATUS_FAILED,
    "canceled": common_pb2.DELIVERY_STATUS_FAILED,
}


def from_twilio_status(form: Mapping[str, str]) -> delivery_events_pb2.DeliveryStatusChanged | None:
    """None for a status that says nothing about an outbound message."""
    sid = form.get("MessageSid", "").strip()
    if not sid:
        raise InvalidWebhook("MessageSid is missing")
    status = _STATUS.get(form.get("MessageStatus", "").strip().lower())
    if status is None:
        return None
    return delivery_events_pb2.DeliveryStatusChanged(
        channel=common_pb2.CHANNEL_WHATSAPP,
        provider_message_id=sid,
        status=status,
        error_code=form.get("ErrorCode", ""),
        error_message=form.get("ErrorMessage", ""),
        occurred_time=_timestamp(),
    )


_CATEGORY = {
    "general": common_pb2.CATEGORY_GENERAL,
    "technical": common_pb2.CATEGORY_TECHNICAL,
    "billing": common_pb2.CATEGORY_BILLING,
    "bug_report": common_pb2.CATEGORY_BUG_REPORT,
    "feedback": common_pb2.CATEGORY_FEEDBACK,
}
_PRIORITY = {
    "low": common_pb2.PRIORITY_LOW,
    "medium": common_pb2.PRIORITY_MEDIUM,
    "high": common_pb2.PRIORITY_HIGH,
}


def from_status_page(reference: str, text: str) -> tuple[str, message_events_pb2.MessageReceived]:
    """A reply typed on a ticket's status page: keyed like the ticket's first message."""
    msg = message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WEB_FORM,
        channel_message_id=f"{reference}-reply-{uuid.uuid4().hex}",
        text_body=text,
        web_form=message_events_pb2.WebForm(ticket_reference=reference, follow_up=True),
        received_time=_timestamp(),
    )
    return f"web:{reference}", msg


def from_web_form(form: SupportForm, reference: str) -> tuple[str, message_events_pb2.MessageReceived]:
    msg = message_events_pb2.MessageReceived(
        channel=common_pb2.CHANNEL_WEB_FORM,
        channel_message_id=reference,
        sender=message_events_pb2.Sender(email=form.email, phone=form.phone),
        display_name=form.name,
        subject=form.subject,
        text_body=form.message,
        web_form=message_events_pb2.WebForm(
            category=_CATEGORY[form.category], priority=_PRIORITY[form.priority], ticket_reference=reference
        ),
        received_time=_timestamp(),
    )
    return email_key(form.email), msg
