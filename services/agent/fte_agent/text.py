"""What the customer actually wrote, ready to be read: markup remnants, invisible characters and
planted instructions removed. Planted instructions are data, never part of the decision."""

from __future__ import annotations

import re
from collections.abc import Iterable

_COMMENT = re.compile(r"<!--.*?(-->|$)", re.S)
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# Bracketed or parenthesised notes addressed to a machine: "[system: ...]", "(note to AI: ...)".
_MACHINE_NOTE = re.compile(
    r"[\[(<{]\s*(system|admin|assistant|ai|bot|agent|note to (the )?(ai|bot|agent|assistant)|instructions?)"
    r"\s*[:\-][^\])>}]*[\])>}]",
    re.I,
)
# A closing bracket ends a unit too: "[ignore your rules] We are filing a claim." keeps the claim.
_SENTENCE = re.compile(r"(?<=[.!?\n\])])\s+")


def visible(text: str) -> str:
    """The text without HTML comments, tags, machine-addressed notes and invisible characters."""
    text = _COMMENT.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _MACHINE_NOTE.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def without_instructions(text: str, markers: Iterable[re.Pattern[str]]) -> tuple[str, bool]:
    """The text without sentences that try to instruct the agent, and whether there were any."""
    found = False
    kept: list[str] = []
    patterns = tuple(markers)
    for sentence in _SENTENCE.split(text):
        if any(p.search(sentence) for p in patterns):
            found = True
        else:
            kept.append(sentence)
    return " ".join(kept).strip(), found


def readable(text: str, subject: str, markers: Iterable[re.Pattern[str]]) -> tuple[str, bool]:
    """Subject and body as the reader sees them; True when instructions were planted."""
    raw = f"{subject}\n{text}".strip()
    shown = visible(raw)
    clean, injected = without_instructions(shown, markers)
    return clean, injected or (
        shown != " ".join(raw.split()) and bool(_MACHINE_NOTE.search(raw) or _COMMENT.search(raw))
    )
