"""Identifiers as channels give them, turned into one canonical form per kind: the one form the
mesh keys customers by (identity stores it; the agent compares mentions with it).

- email: trimmed and case-folded (the raw form is kept beside it).
- phone: E.164 via `phonenumbers`; numbers without a country code use the default region.
- WhatsApp: "whatsapp:+E164", with or without the prefix and in any phone formatting.
- WhatsApp business-scoped user id (BSUID): "CC.ID" as Meta sends it for users who hide their
  number; the optional "whatsapp:" prefix is dropped and the country prefix upper-cased. The id
  part is kept as given: it is opaque and may be case-sensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from fte.identity.v1 import identity_pb2

Kind = identity_pb2.IdentifierKind

MAX_VALUE_LENGTH = 320

_WHATSAPP_PREFIX = re.compile(r"^\s*whatsapp\s*:\s*", re.IGNORECASE)
# Local part and domain as they appear in real traffic; deliberately not the full RFC 5322 grammar.
_EMAIL = re.compile(r"^[^\s@\"<>(),;:\\\[\]]{1,64}@(?=.{1,255}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_BSUID = re.compile(r"^([A-Za-z]{2})\.([A-Za-z0-9_-]{1,128})$")


class InvalidIdentifier(ValueError):
    """The value is not a well-formed identifier of its kind; `reason` is UPPER_SNAKE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Normalized:
    kind: int
    value: str
    raw_value: str


def normalize(kind: int, raw: str, default_region: str) -> Normalized:
    """The canonical form of an identifier; raises InvalidIdentifier. Messages never echo the value."""
    if kind not in (
        Kind.IDENTIFIER_KIND_EMAIL,
        Kind.IDENTIFIER_KIND_PHONE,
        Kind.IDENTIFIER_KIND_WHATSAPP,
        Kind.IDENTIFIER_KIND_WHATSAPP_BSUID,
    ):
        raise InvalidIdentifier("UNKNOWN_IDENTIFIER_KIND", "kind must be EMAIL, PHONE, WHATSAPP or WHATSAPP_BSUID")
    if not raw.strip():
        raise InvalidIdentifier("IDENTIFIER_REQUIRED", "value is required")
    if len(raw) > MAX_VALUE_LENGTH:
        raise InvalidIdentifier("IDENTIFIER_TOO_LONG", f"value must be at most {MAX_VALUE_LENGTH} characters")
    if kind == Kind.IDENTIFIER_KIND_EMAIL:
        return Normalized(kind, normalize_email(raw), raw)
    if kind == Kind.IDENTIFIER_KIND_PHONE:
        return Normalized(kind, normalize_phone(raw, default_region), raw)
    if kind == Kind.IDENTIFIER_KIND_WHATSAPP:
        return Normalized(kind, "whatsapp:" + normalize_phone(_WHATSAPP_PREFIX.sub("", raw), default_region), raw)
    return Normalized(kind, normalize_bsuid(raw), raw)


def normalize_email(raw: str) -> str:
    value = raw.strip().casefold()
    if value.startswith("mailto:"):
        value = value[len("mailto:") :]
    if not _EMAIL.match(value):
        raise InvalidIdentifier("INVALID_EMAIL", "value is not a valid email address")
    return value


def normalize_phone(raw: str, default_region: str) -> str:
    text = raw.strip()
    # "00" is the international prefix in most of the world; phonenumbers only knows it per region.
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier("INVALID_PHONE", "value is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("INVALID_PHONE", "value is not a valid phone number")
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def normalize_bsuid(raw: str) -> str:
    text = _WHATSAPP_PREFIX.sub("", raw).strip()
    match = _BSUID.match(text)
    if not match:
        raise InvalidIdentifier("INVALID_BSUID", "value is not a WhatsApp business-scoped user id ('CC.ID')")
    return f"{match.group(1).upper()}.{match.group(2)}"
