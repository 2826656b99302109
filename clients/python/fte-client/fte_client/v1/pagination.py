"""Iterators over every List method's pages (`page_size`/`page_token`/`next_page_token`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar


class _PagedRequest(Protocol):
    page_token: str

    def CopyFrom(self, other: Any) -> None: ...


class _PagedResponse(Protocol):
    @property
    def next_page_token(self) -> str: ...


Req = TypeVar("Req", bound=_PagedRequest)
Resp = TypeVar("Resp", bound=_PagedResponse)
Item = TypeVar("Item")


async def pages(method: Callable[[Req], Awaitable[Resp]], request: Req) -> AsyncIterator[Resp]:
    """Each page's response, from the request's `page_token` on, until the last page. The request
    is copied, not changed."""
    current = type(request)()
    current.CopyFrom(request)
    while True:
        response = await method(current)
        yield response
        if not response.next_page_token:
            return
        current.page_token = response.next_page_token


async def paginate(
    method: Callable[[Req], Awaitable[Resp]], request: Req, items: Callable[[Resp], Iterable[Item]]
) -> AsyncIterator[Item]:
    """Every item of every page: `items` picks them out of a response (e.g. `lambda r: r.articles`)."""
    async for response in pages(method, request):
        for item in items(response):
            yield item
