"""Channels to other services: every call carries the caller's token, the correlation id, and
the remaining deadline of the request being served (clamped to a default when there is none), and,
with tracing on, the trace context. The channel itself (options, retries of idempotent methods) is
the client package's."""

from __future__ import annotations

import grpc
from fte_client.v1.channel import CallDefaults, open_channel

from fte_runtime import tracing
from fte_runtime.context import CORRELATION_HEADER, current_correlation_id, remaining_seconds


def _timeout_for(default_timeout: float, explicit: float | None) -> float:
    # An explicit per-call timeout replaces the default but never outlives the request being served.
    timeout = remaining_seconds(explicit if explicit is not None else default_timeout)
    return timeout if explicit is None else min(timeout, explicit)


def connect(target: str, *, token: str | None = None, default_timeout: float = 5.0) -> grpc.aio.Channel:
    """An insecure channel (TLS is Envoy's job in the mesh) with the call-context interceptor."""
    defaults = CallDefaults(
        token,
        default_timeout,
        metadata=lambda: ((CORRELATION_HEADER, current_correlation_id()),),
        timeout_for=lambda explicit: _timeout_for(default_timeout, explicit),
    )
    # The tracing interceptors (when on) come after ours and add `traceparent` to the metadata.
    return open_channel(target, [defaults, *tracing.client_interceptors()])
