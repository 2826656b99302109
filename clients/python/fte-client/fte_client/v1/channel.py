"""The one way a channel to the fte APIs is made, by this client and by the services' own runtime
(`fte_runtime.grpc_client`): message limits, keepalive, the bearer token, a deadline on every
call, and retries of idempotent methods.

Retries are gRPC's own (the channel's service config): only methods that change nothing (Get*,
List*, Search*) are retried, only on UNAVAILABLE, with exponential back-off, within the call's
deadline, and throttled when most calls fail so a struggling service is not hammered."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from fte.agent.v1 import agent_service_pb2
from fte.identity.v1 import identity_service_pb2
from fte.knowledge.v1 import knowledge_service_pb2
from fte.notifier.v1 import notifier_service_pb2
from google.protobuf.descriptor import FileDescriptor

from fte_client.v1.errors import from_rpc_error

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Read-only by the API design guide's naming: safe to send again.
IDEMPOTENT_PREFIXES = ("Get", "List", "Search")
RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_FILES: tuple[FileDescriptor, ...] = (
    knowledge_service_pb2.DESCRIPTOR,
    identity_service_pb2.DESCRIPTOR,
    agent_service_pb2.DESCRIPTOR,
    notifier_service_pb2.DESCRIPTOR,
)

Metadata = Sequence[tuple[str, str]]


def idempotent_methods(files: Iterable[FileDescriptor] = SERVICE_FILES) -> list[tuple[str, str]]:
    """(full service name, method) of every method that may be retried."""
    return [
        (service.full_name, method.name)
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
        if method.name.startswith(IDEMPOTENT_PREFIXES)
    ]


def service_config() -> str:
    """The channel's service config: the retry policy on the idempotent methods."""
    names = [{"service": service, "method": method} for service, method in idempotent_methods()]
    return json.dumps(
        {
            "methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}],
            # Retries stop while more than about half the recent calls failed.
            "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
        }
    )


class CallDefaults(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds the bearer token and extra metadata to every call and gives it a deadline.

    `timeout_for(explicit)` turns the call's own timeout (None when it set none) into the one sent;
    the default uses `default_timeout` when the call set none."""

    def __init__(
        self,
        token: str | None,
        default_timeout: float,
        *,
        metadata: Callable[[], Metadata] | None = None,
        timeout_for: Callable[[float | None], float] | None = None,
    ) -> None:
        self._auth: Metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._metadata = metadata
        self._timeout_for = timeout_for or (lambda explicit: default_timeout if explicit is None else explicit)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        keys = {k for k, _ in metadata}
        extra = [*(self._metadata() if self._metadata else ()), *self._auth]
        metadata += [(k, v) for k, v in extra if k not in keys]
        return grpc.aio.ClientCallDetails(
            details.method,
            self._timeout_for(details.timeout),
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class TypedErrors(grpc.aio.UnaryUnaryClientInterceptor):
    """Raises a failed unary call as the `fte_client.v1.errors` exception of its status."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        return call


def open_channel(
    target: str,
    interceptors: Sequence[grpc.aio.ClientInterceptor],
    *,
    retries: bool = True,
) -> grpc.aio.Channel:
    """An insecure channel (TLS is Envoy's job in the mesh) with the shared options."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", int(retries)),
    ]
    if retries:
        options.append(("grpc.service_config", service_config()))
    return grpc.aio.insecure_channel(target, interceptors=list(interceptors), options=options)
