"""Background tasks: the one way every service stops them on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger("fte.tasks")


async def cancel_all(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel the tasks and wait until each has ended; a task that had failed is logged, not raised,
    so one failure never stops the rest of a shutdown."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task, outcome in zip(pending, await asyncio.gather(*pending, return_exceptions=True), strict=True):
        if isinstance(outcome, Exception):
            log.error("background task %s had failed", task.get_name(), exc_info=outcome)
