"""The grpc.aio server every service runs: health, reflection, and one call wrapper that carries
the cross-cutting concerns (correlation id, deadline, auth, error mapping, metrics, request log)
so servicers hold only domain logic.

The wrapper intercepts every method of the registered services. It is applied once per method
when the service is registered rather than as a `grpc.aio.ServerInterceptor`: an interceptor
costs an extra coroutine and handler lookup on every call, which on a busy service is a visible
share of the time a call takes (bench/grpc_runtime.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from fte_runtime import tracing
from fte_runtime.auth import PUBLIC, Authenticator, principal_quotas, principal_rate_limits
from fte_runtime.context import CORRELATION_HEADER, correlation_id_var, deadline_var, new_correlation_id, principal_var
from fte_runtime.errors import FteError, PermissionDenied, ResourceExhausted, internal_status, to_rpc_status
from fte_runtime.metrics import GRPC_HANDLED, GRPC_LATENCY
from fte_runtime.quota import QuotaCounter, QuotaExhausted, QuotaStore
from fte_runtime.ratelimit import PerClientLimits
from fte_runtime.settings import GrpcServerSettings

log = logging.getLogger("fte.grpc")

Context = Any  # grpc.aio.ServicerContext; its stubs do not fit these wrappers


@dataclass(frozen=True)
class ServiceRegistration:
    """One gRPC service to serve: its generated `add_*_to_server`, the servicer, and the scope
    each method needs (method short name -> scope; `PUBLIC` for none)."""

    full_name: str
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    method_scopes: Mapping[str, str] = field(default_factory=dict)


class CallWrapper:
    """Builds, for each method, the handler that runs the cross-cutting concerns around it."""

    def __init__(
        self,
        domain: str,
        authenticator: Authenticator,
        scopes: Mapping[str, str],
        limits: PerClientLimits | None = None,
        quotas: QuotaCounter | None = None,
    ) -> None:
        self._domain = domain
        self._auth = authenticator
        self._scopes = scopes  # full method path -> scope
        self._limits = limits or PerClientLimits({})
        self._quotas = quotas

    def wrap(self, handler: Any, method: str) -> Any:
        # Typed as Any: grpc's stubs describe synchronous handlers, these are coroutines.
        service, _, name = method.lstrip("/").rpartition("/")
        # Health and reflection are registered unwrapped (public); None here means no scope was
        # configured for the method, which denies it.
        scope = self._scopes.get(method)
        latency = GRPC_LATENCY.labels(service, name)
        counters: dict[grpc.StatusCode, Any] = {}

        def count(code: grpc.StatusCode) -> None:
            counter = counters.get(code)
            if counter is None:
                counter = counters[code] = GRPC_HANDLED.labels(service, name, code.name)
            counter.inc()

        def enter(context: Context) -> None:
            correlation_id = authorization = None
            for key, value in context.invocation_metadata() or ():
                if key == CORRELATION_HEADER:
                    correlation_id = value
                elif key == "authorization":
                    authorization = value
            correlation_id = correlation_id or new_correlation_id()
            correlation_id_var.set(correlation_id)
            tracing.tag_correlation(correlation_id)
            remaining = context.time_remaining()
            deadline_var.set(None if remaining is None else time.monotonic() + remaining)
            if scope == PUBLIC:
                principal_var.set(None)
                return
            principal = self._auth.authenticate(authorization)
            principal_var.set(principal)
            # Before the scope check: a runaway script's refused calls cost it too.
            wait = self._limits.acquire(principal.name)
            if wait > 0:
                raise ResourceExhausted.retry_after(
                    wait,
                    f"caller '{principal.name}' is over its rate limit; retry in {wait:.2f}s",
                    reason="RATE_LIMITED",
                    metadata={"principal": principal.name},
                )
            # After the rate limit: a call refused by it is not counted against the quota.
            if self._quotas is not None and (exhausted := self._quotas.acquire(principal.name)) is not None:
                raise quota_exceeded(exhausted)
            if scope is None:
                # Deny by default: a method nobody gave a scope is a configuration mistake.
                raise PermissionDenied(f"method {method} has no scope configured", reason="METHOD_NOT_ALLOWED")
            Authenticator.authorize(principal, scope)

        async def fail(context: Context, exc: BaseException) -> grpc.StatusCode:
            if isinstance(exc, FteError):
                status = to_rpc_status(exc, self._domain)
                code = exc.code
                log.info("rpc failed", extra={"method": method, "code": code.name, "reason": exc.reason})
            else:
                status = internal_status(self._domain)
                code = grpc.StatusCode.INTERNAL
                log.error("rpc crashed", exc_info=exc, extra={"method": method})
            count(code)
            await context.abort_with_status(rpc_status.to_status(status))
            return code  # pragma: no cover - abort raises

        ok = GRPC_HANDLED.labels(service, name, grpc.StatusCode.OK.name)

        def finish(started: float) -> None:
            elapsed = time.perf_counter() - started
            latency.observe(elapsed)
            ok.inc()
            if not log.isEnabledFor(logging.DEBUG):
                return
            principal = principal_var.get()
            log.debug(
                "rpc ok",
                extra={
                    "method": method,
                    "ms": round(elapsed * 1000, 2),
                    "caller": principal.name if principal else None,
                },
            )

        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                try:
                    enter(context)
                    response = await inner_uu(request, context)
                except asyncio.CancelledError:
                    count(grpc.StatusCode.CANCELLED)
                    raise
                except grpc.aio.AbortError:
                    count(context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                except Exception as exc:
                    await fail(context, exc)
                    raise  # pragma: no cover - fail() aborts
                finish(started)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )

        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                try:
                    enter(context)
                    async for item in inner_us(request, context):
                        yield item
                except asyncio.CancelledError:
                    count(grpc.StatusCode.CANCELLED)
                    raise
                except grpc.aio.AbortError:
                    count(context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                except Exception as exc:
                    await fail(context, exc)
                    raise  # pragma: no cover
                finish(started)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )

        # Serving a client-streaming method unwrapped would skip auth: refuse it at start-up.
        raise TypeError(f"{method}: client-streaming methods are not supported by the runtime")


def quota_exceeded(exhausted: QuotaExhausted) -> ResourceExhausted:
    """RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, naming the window and its limit, with a
    RetryInfo until the window resets."""
    per = "daily" if exhausted.period == "day" else "monthly"
    resets_at = exhausted.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ResourceExhausted.retry_after(
        exhausted.retry_after,
        f"caller '{exhausted.principal}' has used its {per} quota of {exhausted.limit} calls; "
        f"it resets at {resets_at}, in {exhausted.retry_after:.0f}s",
        reason="QUOTA_EXCEEDED",
        metadata={
            "principal": exhausted.principal,
            "window": exhausted.period,
            "limit": str(exhausted.limit),
            "resets_at": resets_at,
        },
    )


class _WrappingRegistrar:
    """Stands in for the server while a generated `add_*_to_server` registers a service, and
    registers the wrapped handlers instead."""

    def __init__(self, server: grpc.aio.Server, wrapper: CallWrapper) -> None:
        self._server = server
        self._wrapper = wrapper
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        # The generated code registers the same handlers again, by name, right after this call;
        # those are the ones wrapped and registered below.
        pass

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        wrapped = {name: self._wrapper.wrap(h, f"/{service}/{name}") for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)
        self.registered.append(service)


class GrpcServer:
    """A service's gRPC server with health and reflection, started and drained as one."""

    def __init__(
        self,
        settings: GrpcServerSettings,
        domain: str,
        services: Sequence[ServiceRegistration],
        *,
        max_message_bytes: int = 8 * 1024 * 1024,
        quota_store: QuotaStore | None = None,
    ) -> None:
        self.settings = settings
        self.domain = domain
        self.services = services
        scopes: dict[str, str] = {}
        for svc in services:
            for method, scope in svc.method_scopes.items():
                scopes[f"/{svc.full_name}/{method}"] = scope
        self.server = grpc.aio.server(
            # A span per call continuing the caller's trace, when tracing is on (nothing when off).
            interceptors=tracing.server_interceptors(),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        quotas = principal_quotas(settings.auth_tokens)
        if quotas and quota_store is None:
            # Unenforced quotas would look like working ones: refuse the start instead.
            raise RuntimeError(f"{', '.join(sorted(quotas))} have quotas, but {domain} keeps no quota counts")
        # Only principals with a quota cost anything: without any, nothing is counted or flushed.
        self.quotas = (
            QuotaCounter(
                quotas,
                quota_store,
                flush_seconds=settings.quota_flush_seconds,
                flush_calls=settings.quota_flush_calls,
            )
            if quotas and quota_store is not None
            else None
        )
        wrapper = CallWrapper(
            domain,
            Authenticator(settings.auth_tokens),
            scopes,
            PerClientLimits(principal_rate_limits(settings.auth_tokens)),
            self.quotas,
        )
        registrar = _WrappingRegistrar(self.server, wrapper)
        for svc in services:
            svc.add_to_server(svc.servicer, registrar)  # type: ignore[arg-type]
            if svc.full_name not in registrar.registered:
                raise RuntimeError(f"{svc.full_name} did not register its methods by name")
        reflection.enable_server_reflection(
            [svc.full_name for svc in services] + [health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self) -> int:
        if self.quotas is not None:
            # The totals so far, before the first call is admitted.
            await self.quotas.start()
        self.port = self.server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        if self.port == 0:
            raise RuntimeError(f"could not bind {self.settings.grpc_host}:{self.settings.grpc_port}")
        await self.server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        for svc in self.services:
            await self.health.set(svc.full_name, serving)
        log.info("serving", extra={"port": self.port, "services": [s.full_name for s in self.services]})
        return self.port

    async def stop(self) -> None:
        """Readiness goes NOT_SERVING first, then in-flight calls get the grace period."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.quotas is not None:
            # Calls admitted while draining are counted too.
            await self.quotas.stop()
        log.info("stopped")
