"""Opaque page tokens for every List method.

A token is URL-safe base64 of JSON holding the position after the last item returned and a
fingerprint of the filters, so a token cannot be replayed against a different query.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fte_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE")
    return min(requested or default, maximum)


def _fingerprint(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_token(position: Any, filters: Any = None) -> str:
    raw = json.dumps({"p": position, "f": _fingerprint(filters)}, default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: Any = None) -> Any:
    """The position in `token`, or None for an empty token."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        position, fingerprint = data["p"], data["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN") from exc
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument("page_token was issued for different filters", reason="INVALID_PAGE_TOKEN")
    return position
