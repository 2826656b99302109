"""Exponential back-off: the one way every retry loop in the services waits between attempts."""

from __future__ import annotations

import asyncio
import contextlib
import random


def delay_for(attempt: int, *, base: float, cap: float) -> float:
    """The wait before retry number `attempt` (1 for the first retry): `base`, doubled each
    further attempt, never more than `cap`."""
    return float(min(cap, base * 2.0 ** max(attempt - 1, 0)))


class Backoff:
    """Delays that double from `initial` up to `cap`, with optional jitter (each delay drawn
    from half to one and a half times its value); `reset()` after a success."""

    __slots__ = ("_cap", "_initial", "_jitter", "_next")

    def __init__(self, initial: float = 0.1, cap: float = 5.0, *, jitter: bool = False) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("back-off needs 0 < initial <= cap")
        self._initial = initial
        self._cap = cap
        self._jitter = jitter
        self._next = initial

    def reset(self) -> None:
        self._next = self._initial

    def next_delay(self) -> float:
        """The delay to wait now; the following one doubles (up to the cap)."""
        delay = self._next
        self._next = min(delay * 2, self._cap)
        return delay * (0.5 + random.random()) if self._jitter else delay

    async def wait(self, stopping: asyncio.Event | None = None) -> bool:
        """Sleep the next delay; with `stopping`, wake when it is set. True unless stopping."""
        delay = self.next_delay()
        if stopping is None:
            await asyncio.sleep(delay)
            return True
        if stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        return not stopping.is_set()
