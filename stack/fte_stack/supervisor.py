"""Restarts the stack's processes when they die, as a kubelet restarts a crashed container: after
a back-off that doubles with each restart in a row (reset once the process has run for a while),
with a restart count and a line in the log for each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fte_runtime.backoff import delay_for

log = logging.getLogger("fte.stack")

# Returns once the process has exited: its exit code, or None when unknown.
Exited = Callable[[], Awaitable[int | None]]
Starter = Callable[[], Awaitable[None]]

# A process that ran this long before dying starts again at the shortest back-off.
STABLE_SECONDS = 60.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


@dataclass
class Watched:
    name: str
    exited: Exited
    start: Starter
    restarts: int = 0
    in_a_row: int = 0


class Supervisor:
    def __init__(self) -> None:
        self._watched: dict[str, Watched] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, name: str, exited: Exited, start: Starter) -> None:
        """Restart `name` with `start()` each time `exited()` returns. The restart count stays
        when the same name is watched again."""
        earlier = self._watched.get(name)
        watched = Watched(name, exited, start, restarts=earlier.restarts if earlier else 0)
        self._watched[name] = watched
        self._tasks[name] = asyncio.create_task(self._run(watched), name=f"supervise {name}")

    async def release(self, name: str) -> None:
        """Stop restarting `name` (before stopping or killing it on purpose)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def restarts(self) -> dict[str, int]:
        return {name: w.restarts for name, w in self._watched.items()}

    async def close(self) -> None:
        for name in list(self._tasks):
            await self.release(name)

    async def _run(self, watched: Watched) -> None:
        while True:
            began = time.monotonic()
            code = await watched.exited()
            watched.in_a_row = 1 if time.monotonic() - began >= STABLE_SECONDS else watched.in_a_row + 1
            watched.restarts += 1
            delay = delay_for(watched.in_a_row, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS)
            log.warning(
                "%s exited with code %s; restarting in %.1fs (restart %d)", watched.name, code, delay, watched.restarts
            )
            await asyncio.sleep(delay)
            try:
                await watched.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Counted as another death in a row: the next attempt waits longer.
                log.warning("%s did not come back: %s", watched.name, exc)
                continue
            log.warning("%s is back after restart %d", watched.name, watched.restarts)
