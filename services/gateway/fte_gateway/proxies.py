"""Who is calling and at which URL, believing X-Forwarded-* only from the configured proxies."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def _trusted(host: str, proxies: tuple[Network, ...]) -> bool:
    if not proxies:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in proxies)


def client_ip(request: Request, proxies: tuple[Network, ...]) -> str:
    """The first untrusted hop from the right of X-Forwarded-For, when the peer is a trusted proxy."""
    peer = request.client.host if request.client else ""
    if not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


# A path that the URL round trip (escaping, then splitting) gives back unchanged.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]+")


def _path_qs(request: Request) -> str:
    scope = request.scope
    path: str = scope["path"]
    if not scope.get("query_string") and _PLAIN_PATH.fullmatch(path):
        return path  # the common case, without building and re-splitting the whole URL
    url = request.url
    return url.path + (f"?{url.query}" if url.query else "")


def public_url(request: Request, proxies: tuple[Network, ...], base_url: str) -> str:
    """The URL the provider called (and signed): the configured base URL, else the request's own,
    with scheme and host from X-Forwarded-Proto/Host only when the peer is a trusted proxy."""
    path_qs = _path_qs(request)
    if base_url:
        return base_url.rstrip("/") + path_qs
    scheme: str = request.scope.get("scheme", "http")
    host = request.headers.get("host")
    if host is None:
        host = request.url.netloc
    peer = request.client.host if request.client else ""
    if _trusted(peer, proxies):
        scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip() or host
    return f"{scheme}://{host}{path_qs}"
