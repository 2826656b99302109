"""Server-rendered pages: the ticket status page and the no-JavaScript form result. Every value is
escaped; the layout matches the support page's stylesheet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape

from fte.agent.v1 import agent_pb2

STATUS_LABELS = {
    agent_pb2.TICKET_STATUS_OPEN: "Open",
    agent_pb2.TICKET_STATUS_IN_PROGRESS: "In progress",
    agent_pb2.TICKET_STATUS_RESOLVED: "Resolved",
    agent_pb2.TICKET_STATUS_ESCALATED: "With our support team",
}
AUTHOR_LABELS = {
    agent_pb2.AUTHOR_CUSTOMER: "You",
    agent_pb2.AUTHOR_AGENT: "Support",
    agent_pb2.AUTHOR_HUMAN: "Support team",
}


@dataclass(frozen=True)
class ConversationEntry:
    author: str
    text: str
    time: str  # ISO 8601, UTC


def page(title: str, body: str, *, refresh_seconds: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/support/static/support.css"></head>'
        f'<body><main class="fte-support">{body}</main></body></html>'
    )


def ticket_page(reference: str, status: str, subject: str, entries: Iterable[ConversationEntry]) -> str:
    items = "".join(
        f'<li><span class="who">{escape(e.author)}</span><time datetime="{escape(e.time)}">{escape(e.time)}</time>'
        f'<p class="text">{escape(e.text)}</p></li>'
        for e in entries
    )
    conversation = f'<ol class="conversation">{items}</ol>' if items else "<p>No messages yet.</p>"
    body = (
        f"<h1>Request {escape(reference)}</h1>"
        f'<p>Status: <span class="badge" id="ticket-status">{escape(status)}</span></p>'
        + (f"<p>Subject: {escape(subject)}</p>" if subject else "")
        + f"<h2>Conversation</h2>{conversation}"
        + f'<form method="post" action="/support/ticket/{escape(reference)}/reply" class="reply">'
        '<label for="reply-message">Reply (for example the code we sent you)</label>'
        '<textarea id="reply-message" name="message" maxlength="5000" required></textarea>'
        '<button type="submit">Send</button></form>'
        '<p><a href="/support">Contact support again</a></p>'
    )
    return page(f"Request {reference}", body)


def pending_page(reference: str) -> str:
    body = (
        f"<h1>Request {escape(reference)}</h1>"
        '<p>Status: <span class="badge" id="ticket-status">Received</span></p>'
        "<p>We have your request and are opening a ticket for it. This page refreshes by itself.</p>"
    )
    return page(f"Request {reference}", body, refresh_seconds=5)


def message_page(title: str, text: str) -> str:
    return page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")


def submitted_page(reference: str, status_url: str) -> str:
    body = (
        "<h1>Thank you, we have your request</h1>"
        f'<p>Your ticket reference is <strong class="reference">{escape(reference)}</strong>. Keep it to follow up.</p>'
        f'<p><a href="{escape(status_url)}">See the status of your request</a></p>'
    )
    return page("Request received", body)


def errors_page(fields: Mapping[str, str]) -> str:
    items = "".join(f"<li>{escape(field)}: {escape(text)}</li>" for field, text in fields.items())
    body = (
        "<h1>Please check your request</h1>"
        f'<div class="status error" role="alert"><ul>{items}</ul></div>'
        '<p><a href="/support">Back to the form</a> (use your browser\'s back button to keep what you typed).</p>'
    )
    return page("Please check your request", body)
