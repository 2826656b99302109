"""Opaque page tokens for every List method.

A token is URL-safe base64 of JSON holding the position after the last item returned and a
fingerprint of the filters, so a token cannot be replayed against a different query.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fte_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

T = TypeVar("T")


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


class Page:
    """One List call's page, the same way in every service: read `position` from the request's
    token, fetch `limit` rows (one more than the page, to know whether another follows), then
    `cut()` them into the page and the next page's token ("" on the last page)."""

    __slots__ = ("filters", "position", "size")

    def __init__(self, size: int, token: str, filters: Any = None) -> None:
        self.size = size
        self.filters = filters
        self.position: Any = decode_token(token, filters)

    @property
    def limit(self) -> int:
        return self.size + 1

    def next_token(self, last_position: Any, more: bool) -> str:
        return encode_token(last_position, self.filters) if more else ""

    def cut(self, rows: Sequence[T], position_of: Callable[[T], Any]) -> tuple[list[T], str]:
        items = list(rows[: self.size])
        more = len(rows) > self.size and bool(items)
        return items, self.next_token(position_of(items[-1]), more) if more else ""
