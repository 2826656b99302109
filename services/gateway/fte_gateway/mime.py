"""Gmail messages (users.messages.get, format=full) into what the agent needs: the new text of the
message without quoted history or signature, threading headers, subject and attachment metadata."""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any

MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class AttachmentMeta:
    attachment_id: str
    filename: str
    content_type: str
    size_bytes: int


@dataclass(frozen=True)
class ParsedEmail:
    gmail_id: str
    thread_id: str
    label_ids: tuple[str, ...]
    from_name: str
    from_address: str
    to_addresses: tuple[str, ...]
    subject: str
    message_id: str
    in_reply_to: str
    references: tuple[str, ...]
    text: str
    internal_date_ms: int
    attachments: tuple[AttachmentMeta, ...] = field(default_factory=tuple)
    # Gmail's own Authentication-Results show the From's domain passed DMARC, or DKIM/SPF for it.
    authenticated: bool = False


# The authentication service id Gmail stamps on the Authentication-Results it adds on receipt.
GMAIL_AUTHSERV_ID = "mx.google.com"
_AUTH_RESULT = re.compile(r"\b(dkim|spf|dmarc)\s*=\s*(\w+)([^;]*)", re.IGNORECASE)
_AUTH_DOMAIN = re.compile(
    r"\b(?:header\.d|header\.i|smtp\.mailfrom|header\.from)\s*=\s*(?:[^\s@;]*@)?([\w.-]+)", re.IGNORECASE
)


def _domain_matches(domain: str, from_domain: str) -> bool:
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return bool(domain) and (from_domain == domain or from_domain.endswith("." + domain))


def sender_authenticated(authentication_results: str, from_address: str) -> bool:
    """True when Gmail's Authentication-Results (the first such header: Gmail prepends its own, so a
    forged one sits below it) say DMARC passed, or DKIM or SPF passed for the From's domain."""
    authserv, _, results = authentication_results.partition(";")
    if authserv.strip().lower() != GMAIL_AUTHSERV_ID or "@" not in from_address:
        return False
    from_domain = from_address.rsplit("@", 1)[1]
    for method, outcome, props in _AUTH_RESULT.findall(results):
        if outcome.lower() != "pass":
            continue
        domain = _AUTH_DOMAIN.search(props)
        if domain and _domain_matches(domain.group(1), from_domain):
            return True
        if method.lower() == "dmarc" and domain is None:
            return True
    return False


def _decode_header(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


def _b64(data: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return b""


def _charset(part: dict[str, Any]) -> str:
    for h in part.get("headers") or ():
        if str(h.get("name", "")).lower() == "content-type":
            match = re.search(r'charset="?([\w.:-]+)"?', str(h.get("value", "")), re.IGNORECASE)
            if match:
                return match.group(1)
    return "utf-8"


def _text_of(part: dict[str, Any]) -> str:
    data = _b64(str((part.get("body") or {}).get("data", "")))
    try:
        return data.decode(_charset(part), "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _walk(part: dict[str, Any]) -> list[dict[str, Any]]:
    out = [part]
    for sub in part.get("parts") or ():
        if isinstance(sub, dict):
            out.extend(_walk(sub))
    return out


_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d])|max-height\s*:\s*0(?![.\d])"
    r"|opacity\s*:\s*0(?![.\d])",
    re.IGNORECASE,
)
_VOID = frozenset({"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"})


class _HtmlToText(HTMLParser):
    """Block elements become line breaks; scripts, styles, quoted blocks and anything the reader
    cannot see (hidden attributes and styles) are dropped, like comments, which the parser skips."""

    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})
    _SKIP = frozenset({"script", "style", "head", "title", "blockquote", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        # One entry per open element: whether it (or an ancestor) is skipped.
        self._open: list[tuple[str, bool]] = []

    @property
    def _skipping(self) -> bool:
        return bool(self._open) and self._open[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = values.get("class") or ""
        # Gmail and Outlook wrap quoted history in these containers.
        skip = (
            tag in self._SKIP
            or "gmail_quote" in classes
            or "gmail_signature" in classes
            or "hidden" in values
            or (values.get("aria-hidden") or "").lower() == "true"
            or bool(_HIDDEN_STYLE.search(values.get("style") or ""))
        )
        if tag in self._BLOCK and not self._skipping:
            self.chunks.append("\n")
        if tag not in _VOID:
            self._open.append((tag, self._skipping or skip))

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching element (browsers forgive unclosed children the same way).
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break
        if tag in self._BLOCK and not self._skipping:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlToText()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in html.unescape("".join(parser.chunks)).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_QUOTE_HEADERS = (
    re.compile(r"^On .{0,300}wrote:\s*$", re.IGNORECASE),  # Gmail, Apple Mail (may wrap: see below)
    re.compile(r"^Le .{0,300}a écrit\s*:\s*$", re.IGNORECASE),
    re.compile(r"^Am .{0,300}schrieb .{0,200}:\s*$", re.IGNORECASE),
    re.compile(r"^-{2,}\s*Original Message\s*-{2,}\s*$", re.IGNORECASE),
    re.compile(r"^-{2,}\s*Forwarded message\s*-{2,}\s*$", re.IGNORECASE),
    re.compile(r"^_{10,}\s*$"),  # Outlook's rule above the quoted headers
    re.compile(r"^From:\s.+$"),  # Outlook: a header block of the quoted message
)
_SIGNATURE = (
    re.compile(r"^--\s*$"),  # the RFC 3676 "-- " delimiter
    re.compile(r"^Sent from my \w+", re.IGNORECASE),
    re.compile(r"^Get Outlook for \w+", re.IGNORECASE),
)


def strip_quotes_and_signature(text: str) -> str:
    """The new part of a reply: cut at the first quote header or signature, drop `>` lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        # "On <date>, <name> <addr>" and "wrote:" are often wrapped onto two lines.
        joined = f"{stripped} {lines[i + 1].strip()}" if i + 1 < len(lines) else stripped
        if kept and any(p.match(stripped) or p.match(joined) for p in _QUOTE_HEADERS):
            break
        if any(p.match(line) for p in _SIGNATURE):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line.rstrip())
    body = "\n".join(kept).strip()
    return re.sub(r"\n{3,}", "\n\n", body)[:MAX_TEXT_CHARS]


def parse_gmail_message(resource: dict[str, Any]) -> ParsedEmail:
    """A users.messages resource (format=full) as a ParsedEmail."""
    payload: dict[str, Any] = resource.get("payload") or {}
    headers: dict[str, str] = {}
    for h in payload.get("headers") or ():
        headers.setdefault(str(h.get("name", "")).lower(), str(h.get("value", "")))
    from_name, from_address = parseaddr(_decode_header(headers.get("from", "")))
    to_addresses = tuple(a for _, a in getaddresses([headers.get("to", ""), headers.get("cc", "")]) if a)

    plain: list[str] = []
    markup: list[str] = []
    attachments: list[AttachmentMeta] = []
    for part in _walk(payload):
        mime = str(part.get("mimeType", "")).lower()
        body = part.get("body") or {}
        filename = str(part.get("filename") or "")
        if filename or body.get("attachmentId"):
            attachments.append(
                AttachmentMeta(
                    attachment_id=str(body.get("attachmentId", "")),
                    filename=_decode_header(filename),
                    content_type=mime or "application/octet-stream",
                    size_bytes=int(body.get("size") or 0),
                )
            )
        elif mime == "text/plain":
            plain.append(_text_of(part))
        elif mime == "text/html":
            markup.append(_text_of(part))
    text = "\n".join(plain) if any(p.strip() for p in plain) else html_to_text("\n".join(markup))

    return ParsedEmail(
        gmail_id=str(resource.get("id", "")),
        thread_id=str(resource.get("threadId", "")),
        label_ids=tuple(str(x) for x in resource.get("labelIds") or ()),
        from_name=from_name,
        from_address=from_address,
        to_addresses=to_addresses,
        subject=_decode_header(headers.get("subject", "")).strip(),
        message_id=headers.get("message-id", "").strip(),
        in_reply_to=headers.get("in-reply-to", "").strip(),
        references=tuple(headers.get("references", "").split()),
        text=strip_quotes_and_signature(text),
        internal_date_ms=int(resource.get("internalDate") or 0),
        attachments=tuple(attachments),
        authenticated=sender_authenticated(headers.get("authentication-results", ""), from_address),
    )
