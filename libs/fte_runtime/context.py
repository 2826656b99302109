"""Per-request context carried across async calls: correlation id, caller, deadline."""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from dataclasses import dataclass

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
deadline_var: ContextVar[float | None] = ContextVar("deadline", default=None)
principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)

CORRELATION_HEADER = "x-correlation-id"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and what it may do."""

    name: str
    scopes: frozenset[str]


def new_correlation_id() -> str:
    return os.urandom(16).hex()


def current_correlation_id() -> str:
    """The correlation id of the current request, minting one if none is set."""
    cid = correlation_id_var.get()
    if cid is None:
        cid = new_correlation_id()
        correlation_id_var.set(cid)
    return cid


def remaining_seconds(default: float, maximum: float | None = None) -> float:
    """Time left for a downstream call: the caller's remaining deadline, else `default`.

    Python gRPC does not propagate deadlines, so every outgoing call asks this.
    """
    deadline = deadline_var.get()
    timeout = default if deadline is None else max(deadline - time.monotonic(), 0.0)
    if maximum is not None:
        timeout = min(timeout, maximum)
    return timeout
