"""Bearer-token authentication with per-method scopes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from fte_runtime.context import Principal
from fte_runtime.errors import PermissionDenied, Unauthenticated
from fte_runtime.settings import Quota, RateLimit, TokenGrant

# Marks a method anyone may call (health checks, reflection).
PUBLIC = ""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Maps bearer tokens to principals. Tokens are kept only as SHA-256 digests, so lookups do
    not leak timing about the stored tokens and the tokens never sit in memory as given."""

    def __init__(self, grants: Mapping[str, TokenGrant]) -> None:
        self._by_digest = {
            _digest(token): Principal(grant.principal, frozenset(grant.scopes)) for token, grant in grants.items()
        }

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token", reason="TOKEN_MISSING")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <token>'", reason="TOKEN_MALFORMED")
        principal = self._by_digest.get(_digest(token.strip()))
        if principal is None:
            raise Unauthenticated("unknown bearer token", reason="TOKEN_INVALID")
        return principal

    @staticmethod
    def authorize(principal: Principal, scope: str) -> None:
        if scope not in principal.scopes:
            raise PermissionDenied(
                f"caller '{principal.name}' lacks scope '{scope}'",
                reason="MISSING_SCOPE",
                metadata={"scope": scope},
            )


def principal_rate_limits(grants: Mapping[str, TokenGrant]) -> dict[str, tuple[float, int]]:
    """principal -> (requests per minute, burst), for the principals the grants limit. The tokens of
    one principal share one bucket, so they must agree on it: a mismatch stops the start."""
    limits: dict[str, RateLimit | None] = {}
    for grant in grants.values():
        if grant.principal in limits and limits[grant.principal] != grant.rate_limit:
            raise ValueError(f"the tokens of principal '{grant.principal}' give it different rate limits")
        limits[grant.principal] = grant.rate_limit
    return {p: (lim.requests_per_minute, lim.burst) for p, lim in limits.items() if lim is not None}


def principal_quotas(grants: Mapping[str, TokenGrant]) -> dict[str, Quota]:
    """principal -> its quota, for the principals the grants give one. The tokens of one principal
    share its counts, so they must agree on it: a mismatch stops the start."""
    quotas: dict[str, Quota | None] = {}
    for grant in grants.values():
        if grant.principal in quotas and quotas[grant.principal] != grant.quota:
            raise ValueError(f"the tokens of principal '{grant.principal}' give it different quotas")
        quotas[grant.principal] = grant.quota
    return {p: quota for p, quota in quotas.items() if quota is not None}
