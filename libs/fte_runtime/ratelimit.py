"""Per-client token buckets (in memory: each replica limits on its own)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

MAX_TRACKED = 50_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, client: str) -> float:
        """0 when allowed, else the seconds until the next request would be."""
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._evict(now)
            bucket = self._buckets[client] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        # Buckets that have refilled are the same as new ones: forget them.
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}


class PerClientLimits:
    """A token bucket per client, each client at its own rate; clients without one are not limited."""

    def __init__(self, limits: Mapping[str, tuple[float, int]]) -> None:
        self._limiters = {client: RateLimiter(per_minute, burst) for client, (per_minute, burst) in limits.items()}

    def acquire(self, client: str) -> float:
        """0 when allowed, else the seconds until the client's next request would be."""
        limiter = self._limiters.get(client)
        return 0.0 if limiter is None else limiter.acquire(client)
