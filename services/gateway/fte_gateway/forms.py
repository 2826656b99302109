"""The support form: server-side validation (the same rules as the page's) and ticket references."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

CATEGORIES = ("general", "technical", "billing", "bug_report", "feedback")
PRIORITIES = ("low", "medium", "high")
MESSAGE_MIN, MESSAGE_MAX = 10, 5000
NAME_MAX, SUBJECT_MAX, EMAIL_MAX = 200, 200, 254
HONEYPOT_FIELD = "website"

_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{5,22}[0-9]$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")
# Crockford base32: no I, L, O, U, so a reference read aloud or retyped stays unambiguous.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE = re.compile(r"^TKT-[0-9A-HJKMNP-TV-Z]{10}$")


@dataclass(frozen=True)
class SupportForm:
    name: str
    email: str
    phone: str
    subject: str
    category: str
    priority: str
    message: str
    request_id: str
    honeypot_filled: bool


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        value = str(value)
    return value.strip() if isinstance(value, str) else "\x00invalid"


def validate(data: Mapping[str, object]) -> tuple[SupportForm | None, dict[str, str]]:
    """The form, or field -> message for every problem found."""
    errors: dict[str, str] = {}
    name, email, phone = _text(data, "name"), _text(data, "email"), _text(data, "phone")
    subject, message = _text(data, "subject"), _text(data, "message")
    category = _text(data, "category").lower() or "general"
    priority = _text(data, "priority").lower() or "medium"
    request_id = _text(data, "request_id")

    if not name:
        errors["name"] = "Please enter your name."
    elif len(name) > NAME_MAX or "\x00" in name:
        errors["name"] = f"Name must be at most {NAME_MAX} characters."
    if not email:
        errors["email"] = "Please enter your email address."
    elif len(email) > EMAIL_MAX or not _EMAIL.match(email):
        errors["email"] = "Please enter a valid email address, like name@example.com."
    if phone and not _PHONE.match(phone):
        errors["phone"] = "Please enter a valid phone number, like +1 415 555 0100, or leave it empty."
    if not subject:
        errors["subject"] = "Please enter a subject."
    elif len(subject) > SUBJECT_MAX or "\x00" in subject:
        errors["subject"] = f"Subject must be at most {SUBJECT_MAX} characters."
    if category not in CATEGORIES:
        errors["category"] = "Please choose one of: " + ", ".join(CATEGORIES) + "."
    if priority not in PRIORITIES:
        errors["priority"] = "Please choose one of: " + ", ".join(PRIORITIES) + "."
    if len(message) < MESSAGE_MIN:
        errors["message"] = f"Please describe your request in at least {MESSAGE_MIN} characters."
    elif len(message) > MESSAGE_MAX or "\x00" in message:
        errors["message"] = f"Message must be at most {MESSAGE_MAX} characters."
    if request_id and not _REQUEST_ID.match(request_id):
        errors["request_id"] = "Invalid request id."
    if errors:
        return None, errors
    return (
        SupportForm(
            name=name,
            email=email,
            phone=phone,
            subject=subject,
            category=category,
            priority=priority,
            message=message,
            request_id=request_id,
            honeypot_filled=bool(_text(data, HONEYPOT_FIELD)),
        ),
        {},
    )


def mint_reference(request_id: str = "") -> str:
    """A ticket reference. With the page's request id it is derived from it, so a resubmitted form
    (a retry after a timeout) gets the same reference and the agent de-duplicates it."""
    if request_id:
        seed = int.from_bytes(hashlib.sha256(f"fte-web-form:{request_id}".encode()).digest()[:8], "big")
    else:
        seed = secrets.randbits(64)
    chars = []
    for _ in range(10):
        seed, digit = divmod(seed, 32)
        chars.append(_ALPHABET[digit])
    return "TKT-" + "".join(chars)


def validate_reply(data: Mapping[str, object]) -> tuple[str | None, dict[str, str]]:
    """A reply typed on a status page (a one-time code is six characters): 1 to MESSAGE_MAX."""
    raw = data.get("message", "")
    message = raw.strip() if isinstance(raw, str) else ""
    if not message:
        return None, {"message": "Please type your reply."}
    if len(message) > MESSAGE_MAX or "\x00" in message:
        return None, {"message": f"Message must be at most {MESSAGE_MAX} characters."}
    return message, {}
