"""SendMessage requests checked before anything is stored: a bad request is refused with a clear
reason and never reaches a provider."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_service_pb2
from fte_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, Violations
from fte_runtime.idempotency import check_request_id

from fte_notifier.settings import NotifierSettings
from fte_notifier.splitting import split_message
from fte_notifier.store import NewDelivery

MAX_BODY = 20_000
MAX_SUBJECT = 998  # RFC 5322 line limit
WHATSAPP_WINDOW = timedelta(hours=24)

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_THREAD_ID = re.compile(r"^[A-Za-z0-9_-]{0,100}$")
_MESSAGE_ID = re.compile(r"^<?[^<>\s]+@[^<>\s]+>?$")
_CHANNELS = (common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_WHATSAPP, common_pb2.CHANNEL_WEB_FORM)


def _invalid(field: str, message: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", violations=[FieldViolation(field, message)], reason=reason)


def _valid_email(value: str) -> bool:
    return len(value) <= 254 and bool(_EMAIL.match(value))


def _valid_whatsapp(value: str) -> bool:
    if not value.startswith("whatsapp:+"):
        return False
    try:
        number = phonenumbers.parse(value.removeprefix("whatsapp:"), None)
    except phonenumbers.NumberParseException:
        return False
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return formatted == value.removeprefix("whatsapp:") and phonenumbers.is_valid_number(number)


def window_open(last_message: datetime | None, now: datetime) -> bool:
    """WhatsApp's customer-service window: free-form messages only within 24 hours of the
    customer's last message. Unknown means closed: the provider would refuse it anyway."""
    return last_message is not None and now - last_message < WHATSAPP_WINDOW


def _reply_to(req: notifier_service_pb2.SendMessageRequest, v: Violations) -> dict[str, Any] | None:
    if not req.HasField("reply_to"):
        return None
    rt = req.reply_to
    for field, value in (("reply_to.message_id", rt.message_id), ("reply_to.in_reply_to", rt.in_reply_to)):
        v.check(not value or bool(_MESSAGE_ID.match(value)), field, "must be an RFC 5322 Message-ID")
    v.check(all(_MESSAGE_ID.match(r) for r in rt.references), "reply_to.references", "must be RFC 5322 Message-IDs")
    v.check(len(rt.references) <= 100, "reply_to.references", "at most 100")
    v.check(bool(_THREAD_ID.match(rt.gmail_thread_id)), "reply_to.gmail_thread_id", "must be a Gmail thread id")
    if not (rt.message_id or rt.gmail_thread_id):
        return None
    return {
        "message_id": rt.message_id,
        "in_reply_to": rt.in_reply_to,
        "references": list(rt.references),
        "gmail_thread_id": rt.gmail_thread_id,
    }


def validate(
    req: notifier_service_pb2.SendMessageRequest, settings: NotifierSettings, now: datetime | None = None
) -> NewDelivery:
    now = now or datetime.now(UTC)
    if req.channel not in _CHANNELS:
        raise _invalid("channel", f"unknown channel {req.channel}; use EMAIL, WHATSAPP or WEB_FORM", "UNKNOWN_CHANNEL")
    check_request_id(req.request_id, required=True)
    if not req.text_body.strip():
        raise _invalid("text_body", "must not be empty", "EMPTY_BODY")
    if len(req.text_body) > MAX_BODY:
        raise _invalid("text_body", f"must be at most {MAX_BODY} characters", "BODY_TOO_LONG")
    whatsapp = req.channel == common_pb2.CHANNEL_WHATSAPP
    if whatsapp and not _valid_whatsapp(req.recipient):
        raise _invalid("recipient", "must be 'whatsapp:+<E.164 number>' with a valid number", "INVALID_RECIPIENT")
    if not whatsapp and not _valid_email(req.recipient):
        raise _invalid("recipient", "must be an email address", "INVALID_RECIPIENT")
    v = Violations()
    v.check(len(req.subject) <= MAX_SUBJECT, "subject", f"must be at most {MAX_SUBJECT} characters")
    v.check("\n" not in req.subject and "\r" not in req.subject, "subject", "must be one line")
    reply_to = _reply_to(req, v) if not whatsapp else None
    v.raise_if_any()

    template: dict[str, Any] | None = None
    part_count = 1
    if whatsapp:
        last = req.customer_last_message_time.ToDatetime(UTC) if req.HasField("customer_last_message_time") else None
        if window_open(last, now):
            part_count = len(split_message(req.text_body))
        else:
            sid = req.template.content_sid if req.HasField("template") else ""
            if not sid:
                raise FailedPrecondition(
                    "the WhatsApp 24-hour window is closed (the customer last wrote more than 24 hours ago, "
                    "or customer_last_message_time is unset): only an approved template may be sent; "
                    "set template.content_sid",
                    reason="WHATSAPP_WINDOW_CLOSED",
                )
            if sid not in settings.whatsapp_approved_templates:
                raise FailedPrecondition(
                    f"template {sid} is not an approved template of this service; the 24-hour window is closed",
                    reason="TEMPLATE_NOT_APPROVED",
                )
            template = {"content_sid": sid, "variables": dict(sorted(req.template.variables.items()))}

    local_only = not (settings.twilio_configured if whatsapp else settings.gmail_configured)
    fields = {
        "channel": req.channel,
        "recipient": req.recipient,
        "subject": req.subject,
        "text_body": req.text_body,
        "ticket_id": req.ticket_id,
        "reply_to": reply_to,
        "template": template,
    }
    fingerprint = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return NewDelivery(
        request_id=req.request_id,
        fingerprint=fingerprint,
        channel=req.channel,
        recipient=req.recipient,
        subject=req.subject,
        text_body=req.text_body,
        ticket_id=req.ticket_id,
        reply_to=reply_to,
        template=template,
        local_only=local_only,
        part_count=part_count,
    )
