"""What a reply needs to reach the customer in the same thread: the context kept with each inbound
message, and the notifier request built from it. Shared by the worker's replies and the staff
API's human replies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte.notifier.v1 import notifier_service_pb2

from fte_agent import channels

C = common_pb2


def reply_context(msg: message_events_pb2.MessageReceived) -> dict[str, Any]:
    """What a later reply on this ticket (a person's) needs to reach the customer in the same thread."""
    thread = msg.email_thread
    return {
        "recipient": channels.recipient(msg),
        "subject": msg.subject,
        "display_name": msg.display_name,
        "received_time": msg.received_time.ToDatetime(tzinfo=UTC).isoformat(),
        "email_thread": {
            "message_id": thread.message_id,
            "in_reply_to": thread.in_reply_to,
            "references": list(thread.references),
            "gmail_thread_id": thread.gmail_thread_id,
        },
    }


def send_request_from_context(
    request_id: str, channel: int, ctx: dict[str, Any], text: str, ticket_id: str
) -> notifier_service_pb2.SendMessageRequest:
    req = notifier_service_pb2.SendMessageRequest(
        request_id=request_id,
        channel=channel,  # type: ignore[arg-type]
        recipient=ctx.get("recipient", ""),
        subject=ctx.get("subject", "") or f"Your Tasklane support request {ticket_id}",
        text_body=text,
        ticket_id=ticket_id,
    )
    thread = ctx.get("email_thread") or {}
    if channel == C.CHANNEL_EMAIL and thread.get("message_id"):
        refs = [*thread.get("references", [])]
        req.reply_to.CopyFrom(
            common_pb2.EmailThread(
                message_id=thread["message_id"],
                in_reply_to=thread.get("in_reply_to", ""),
                references=refs,
                gmail_thread_id=thread.get("gmail_thread_id", ""),
            )
        )
    if channel == C.CHANNEL_WHATSAPP and ctx.get("received_time"):
        req.customer_last_message_time.FromDatetime(datetime.fromisoformat(ctx["received_time"]))
    return req
