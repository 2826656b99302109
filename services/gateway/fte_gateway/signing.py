"""Twilio webhook forms and their signature check, kept cheap: this is the ingest hot path."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator


class FormParams(dict[str, str]):
    """A parsed form. `getall` is the first accessor the Twilio SDK's signature code tries; a plain
    dict makes it fail over to the next two with an exception each, on every parameter."""

    def getall(self, name: str) -> list[str]:
        return [self[name]]


def parse_urlencoded(text: str) -> FormParams:
    """A flat urlencoded body (a later repeat of a name wins); several times cheaper than the
    multipart-capable form parser."""
    return FormParams(parse_qsl(text, keep_blank_values=True))


def signed(validator: RequestValidator, url: str, params: FormParams, signature: str) -> bool:
    """Twilio's check. The URL exactly as called first (one HMAC); only on a mismatch the SDK's full
    `validate`, which also tries the URL with and without an explicit port."""
    expected = validator.compute_signature(url, params)
    # Header values are latin-1 decoded: encoding back gives the bytes as sent.
    if hmac.compare_digest(expected.encode(), signature.encode("latin-1")):
        return True
    return bool(validator.validate(url, params, signature))
