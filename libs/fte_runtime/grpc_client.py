"""Channels to other services: every call carries the caller's token, the correlation id, and
the remaining deadline of the request being served (clamped to a default when there is none), and,
with tracing on, the trace context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from fte_runtime import tracing
from fte_runtime.context import CORRELATION_HEADER, current_correlation_id, remaining_seconds


class _CallContextInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    def __init__(self, token: str | None, default_timeout: float) -> None:
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        keys = {k for k, _ in metadata}
        if CORRELATION_HEADER not in keys:
            metadata.append((CORRELATION_HEADER, current_correlation_id()))
        if "authorization" not in keys:
            metadata.extend(self._auth)
        # An explicit per-call timeout replaces the default but never outlives the request being served.
        timeout = remaining_seconds(details.timeout if details.timeout is not None else self._default_timeout)
        if details.timeout is not None:
            timeout = min(timeout, details.timeout)
        return grpc.aio.ClientCallDetails(
            details.method, timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


def connect(target: str, *, token: str | None = None, default_timeout: float = 5.0) -> grpc.aio.Channel:
    """An insecure channel (TLS is Envoy's job in the mesh) with the call-context interceptor."""
    return grpc.aio.insecure_channel(
        target,
        # The tracing interceptors (when on) come after ours and add `traceparent` to the metadata.
        interceptors=[_CallContextInterceptor(token, default_timeout), *tracing.client_interceptors()],
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_send_message_length", 8 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 1),
        ],
    )
