"""`python -m fte_stack outbox`: what the local provider fakes of a running `make run` received,
the replies as a customer's phone or mailbox would get them (WhatsApp through the fake Twilio,
email through the fake Gmail)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any


@dataclass(frozen=True, slots=True)
class Received:
    provider: str  # "twilio" or "gmail"
    to: str
    subject: str  # email only
    text: str
    status: str  # the provider's status (Twilio), or its labels (Gmail)
    time: str


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a loopback URL built here
        return json.load(resp)


def twilio_messages(port: int) -> list[Received]:
    out = []
    for m in _get(f"http://127.0.0.1:{port}/_fake/messages")["messages"]:
        out.append(Received("twilio", m["to"], "", m["body"], m["status"], m["date_sent"]))
    return out


def gmail_sent(port: int) -> list[Received]:
    out = []
    for m in _get(f"http://127.0.0.1:{port}/_fake/sent")["messages"]:
        raw = base64.urlsafe_b64decode(m["raw"] + "=" * (-len(m["raw"]) % 4))
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        part = parsed.get_body(preferencelist=("plain", "html"))
        text = part.get_content() if part is not None else ""
        out.append(
            Received(
                "gmail",
                str(parsed["To"]),
                str(parsed["Subject"] or ""),
                text,
                ",".join(m["labelIds"]),
                str(parsed["Date"]),
            )
        )
    return out


def show(twilio_port: int, gmail_port: int, *, as_json: bool, width: int = 100) -> str:
    received = twilio_messages(twilio_port) + gmail_sent(gmail_port)
    if as_json:
        return json.dumps([asdict(r) for r in received], indent=2, ensure_ascii=False)
    lines = []
    for provider, title in (("twilio", "WhatsApp, fake Twilio"), ("gmail", "Email, fake Gmail")):
        mine = [r for r in received if r.provider == provider]
        lines.append(f"{title}: {len(mine)} message(s)")
        for r in mine:
            text = " ".join(r.text.split())
            text = text if len(text) <= width else text[: width - 1] + "…"
            subject = f"  [{r.subject}]" if r.subject else ""
            lines.append(f"  {r.time}  to {r.to}  ({r.status}){subject}\n    {text}")
    return "\n".join(lines)
