"""Splitting long WhatsApp texts into ordered parts of at most 1600 characters, at sentence
boundaries where possible (then at spaces, then anywhere)."""

from __future__ import annotations

import re

WHATSAPP_MAX_CHARS = 1600

# A sentence ends with . ! ? or … (optionally followed by closing quotes or brackets), or a
# paragraph break; the whitespace after it is where a part may end.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n\s*\n")


def _pieces(text: str) -> list[str]:
    """The text cut after every sentence end, keeping the separators with the sentence."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _hard_split(sentence: str, limit: int) -> list[str]:
    """A single sentence longer than the limit: cut at the last space, else at the limit."""
    out: list[str] = []
    rest = sentence
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        out.append(rest[:cut])
        rest = rest[cut:].lstrip(" ")
    if rest:
        out.append(rest)
    return out


def split_message(text: str, limit: int = WHATSAPP_MAX_CHARS) -> list[str]:
    """Ordered parts, each at most `limit` characters, joined back they hold every word."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for piece in _pieces(text):
        if len(current) + len(piece.rstrip()) <= limit:
            current += piece
            continue
        if current.strip():
            parts.append(current.strip())
        current = ""
        if len(piece.rstrip()) > limit:
            chunks = _hard_split(piece.strip(), limit)
            parts.extend(chunks[:-1])
            current = chunks[-1] + " "
        else:
            current = piece
    if current.strip():
        parts.append(current.strip())
    return parts
