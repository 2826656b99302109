"""The MIME email the notifier sends: text and HTML alternatives, threaded by In-Reply-To,
References and a "Re:" subject so Gmail and other clients show it in the conversation."""

from __future__ import annotations

import base64
import html
import re
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

_BRACKETED = re.compile(r"^<[^<>\s]+>$")


def bracket(message_id: str) -> str:
    """A Message-ID with exactly one pair of angle brackets."""
    bare = message_id.strip().strip("<>").strip()
    return f"<{bare}>"


def reply_subject(subject: str, replying: bool) -> str:
    subject = " ".join(subject.split())
    if not replying:
        return subject or "Your support request"
    if re.match(r"^(re|aw|sv)\s*:", subject, re.IGNORECASE):
        return subject
    return f"Re: {subject}" if subject else "Re: Your support request"


def references(reply_to: dict[str, Any] | None) -> list[str]:
    """The References chain: the thread's references, oldest first, then the message answered."""
    if not reply_to:
        return []
    chain = [bracket(r) for r in reply_to.get("references", []) if r.strip()]
    if reply_to.get("in_reply_to") and not chain:
        chain.append(bracket(reply_to["in_reply_to"]))
    if reply_to.get("message_id"):
        chain.append(bracket(reply_to["message_id"]))
    return list(dict.fromkeys(chain))  # without repeats, order kept


def to_html(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    body = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n{body}\n</body></html>\n'


def build_email(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    message_id: str,
    reply_to: dict[str, Any] | None,
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    replying = bool(reply_to and reply_to.get("message_id"))
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = reply_subject(subject, replying)
    msg["Message-ID"] = bracket(message_id)
    if replying and reply_to:
        msg["In-Reply-To"] = bracket(reply_to["message_id"])
        msg["References"] = " ".join(references(reply_to))
    msg.set_content(text)
    msg.add_alternative(to_html(text), subtype="html")
    return msg


def gmail_raw(msg: EmailMessage) -> str:
    """The `raw` field of a Gmail users.messages.send body: base64url of the RFC 5322 bytes."""
    return base64.urlsafe_b64encode(msg.as_bytes()).decode("ascii")
