"""Verification of the OIDC token Pub/Sub puts on each Gmail push (Authorization: Bearer ...).

google-auth checks the signature against the certs URL, the audience and the expiry; the issuer,
the push service account's email and email_verified are checked here (google-auth does not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.auth import transport
from google.oauth2 import id_token

ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
CERTS_TTL_SECONDS = 300.0


class PushAuthError(Exception):
    """`status` is 401 (no or invalid token), 403 (valid token of the wrong caller) or 503."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Cached:
    response: transport.Response
    expires: float


class _CachingRequest(transport.Request):
    """google-auth fetches the certs on every verify; keep them for a few minutes (they rotate daily)."""

    def __init__(self, ttl: float = CERTS_TTL_SECONDS) -> None:
        self._inner = google.auth.transport.requests.Request(session=requests.Session())
        self._ttl = ttl
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> transport.Response:
        if method != "GET":
            response: transport.Response = self._inner(
                url, method=method, body=body, headers=headers, timeout=timeout, **kwargs
            )
            return response
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
            if hit is not None and hit.expires > now:
                return hit.response
            fetched: transport.Response = self._inner(
                url, method="GET", headers=headers, timeout=timeout or 5, **kwargs
            )
            if fetched.status == 200:
                self._cache[url] = _Cached(fetched, now + self._ttl)
            return fetched


class PushVerifier:
    def __init__(self, *, audience: str, service_account: str, certs_url: str) -> None:
        self.audience = audience
        self.service_account = service_account.casefold()
        self.certs_url = certs_url
        self._request = _CachingRequest()

    def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims, or PushAuthError. Blocking (may fetch certs): call in a thread."""
        if not self.audience or not self.service_account:
            raise PushAuthError(403, "push verification is not configured")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise PushAuthError(401, "missing bearer token")
        try:
            claims: Mapping[str, Any] = id_token.verify_token(
                token.strip(), self._request, audience=self.audience, certs_url=self.certs_url, clock_skew_in_seconds=10
            )
        except google.auth.exceptions.TransportError as exc:
            # The certs could not be fetched: not the caller's fault, so the push is retried.
            raise PushAuthError(503, "certs unavailable") from exc
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            # Bad signature, wrong audience, expired, malformed, or certs unreachable.
            raise PushAuthError(401, f"invalid token: {type(exc).__name__}") from exc
        if claims.get("iss") not in ISSUERS:
            raise PushAuthError(401, "wrong issuer")
        if str(claims.get("email", "")).casefold() != self.service_account:
            raise PushAuthError(403, "token of another service account")
        if claims.get("email_verified") is not True:
            raise PushAuthError(403, "email not verified")
        return claims
