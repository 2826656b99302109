"""OpenTelemetry traces: one trace per customer message, from the webhook to the provider call.

`configure_tracing()` is called once per process (the service lifecycle does it): with an OTLP
endpoint configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, see `TracingSettings`) it installs the SDK
with a batching OTLP/gRPC exporter; without one nothing is installed, every helper here returns
at once and no span is made. The W3C trace context travels
- over gRPC as `traceparent` metadata (the OpenTelemetry gRPC interceptors, `server_interceptors`
  and `client_interceptors`),
- over Kafka as the CloudEvents distributed-tracing extension: `ce_traceparent` and
  `ce_tracestate` headers of the binary binding (`producer_span`, `consumer_span`),
- through an outbox as the row's `trace_context` (`carrier()` when the row is written,
  `producer_span(parent=...)` when the relay publishes it), so a relayed event continues the
  trace of the request that wrote it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode

from fte_runtime.settings import TracingSettings

log = logging.getLogger("fte.tracing")

# CloudEvents extension attributes (binary binding: `ce_` + attribute name).
TRACEPARENT_HEADER = "ce_traceparent"
TRACESTATE_HEADER = "ce_tracestate"
_HEADER_OF = {"traceparent": TRACEPARENT_HEADER, "tracestate": TRACESTATE_HEADER}
_ATTRIBUTE_OF = {v: k for k, v in _HEADER_OF.items()}
_W3C_HEADERS = (b"traceparent", b"tracestate")

# gRPC services never traced: probes and tooling would bury the traces of real work.
_UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")

_provider: Any = None  # the SDK's TracerProvider once configured
tracer = trace.get_tracer("fte")


def enabled() -> bool:
    return _provider is not None


def _pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def configure_tracing(service: str, settings: TracingSettings | None = None) -> bool:
    """Install tracing for this process when an OTLP endpoint is configured; whether it is on."""
    global _provider  # noqa: PLW0603 - one tracer provider per process, set once
    settings = settings if settings is not None else TracingSettings()
    if _provider is not None or not settings.endpoint:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {**_pairs(settings.resource_attributes), SERVICE_NAME: settings.service_name or f"fte-{service}"}
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.traces_sampler_arg)))
    exporter = OTLPSpanExporter(
        endpoint=settings.endpoint,
        headers=_pairs(settings.exporter_otlp_headers.get_secret_value()) or None,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=settings.bsp_schedule_delay))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info(
        "tracing on", extra={"otlp_endpoint": settings.endpoint, "service_name": resource.attributes[SERVICE_NAME]}
    )
    return True


def shutdown_tracing() -> None:
    """Export what is still buffered (at process stop)."""
    if _provider is not None:
        _provider.shutdown()


# -- gRPC ---------------------------------------------------------------------------------------


def _traced(details: Any) -> bool:
    method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
    return not method.lstrip("/").startswith(_UNTRACED_SERVICES)


def server_interceptors() -> list[Any]:
    """The OpenTelemetry server interceptor (health and reflection left out); none when off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced)]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """The OpenTelemetry client interceptors (a span per call, `traceparent` metadata); none when off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(filter_=_traced))  # type: ignore[no-untyped-call]


# -- carriers: Kafka headers and outbox rows ----------------------------------------------------


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C fields (`traceparent`, maybe `tracestate`), to store with
    an outbox row; None when tracing is off or no span is active."""
    if _provider is None:
        return None
    fields: dict[str, str] = {}
    propagate.inject(fields)
    fields.pop("baggage", None)
    return fields or None


def context_of(fields: Mapping[str, str] | None) -> Context | None:
    """The context a stored carrier names (None: none stored)."""
    if not fields or "traceparent" not in fields:
        return None
    return propagate.extract(dict(fields))


def headers_of(fields: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    """Kafka headers (`ce_traceparent`, `ce_tracestate`) for a carrier."""
    return [(_HEADER_OF[k], v.encode()) for k, v in (fields or {}).items() if k in _HEADER_OF]


def fields_of(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The carrier in a record's headers (empty when it has none)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        attribute = _ATTRIBUTE_OF.get(key)
        if attribute is not None and value is not None:
            with contextlib.suppress(UnicodeDecodeError):
                out[attribute] = value.decode()
    return out


@contextlib.contextmanager
def producer_span(topic: str, parent: Mapping[str, str] | None = None) -> Iterator[list[tuple[str, bytes]]]:
    """A PRODUCER span for publishing to `topic`, child of `parent` (a stored carrier) or of the
    current span; yields the trace headers the record carries. Off: no span, no headers."""
    if _provider is None:
        yield []
        return
    with tracer.start_as_current_span(
        f"publish {topic}",
        context=context_of(parent),
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
    ):
        fields: dict[str, str] = {}
        propagate.inject(fields)
        yield headers_of(fields)


@contextlib.contextmanager
def consumer_span(
    topic: str, headers: Sequence[tuple[str, bytes]] | None, attributes: Mapping[str, str | int] | None = None
) -> Iterator[Span | None]:
    """A CONSUMER span for processing one record, child of the producer span its headers name."""
    if _provider is None:
        yield None
        return
    with tracer.start_as_current_span(
        f"process {topic}",
        context=context_of(fields_of(headers)),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic, **(attributes or {})},
    ) as span:
        yield span


@contextlib.contextmanager
def http_server_span(
    method: str, route: str, headers: Iterable[tuple[bytes, bytes]]
) -> Iterator[Callable[[int], None] | None]:
    """A SERVER span for an HTTP request (`METHOD /route/template`), continuing the caller's
    `traceparent` when it sent one; yields the function that records the response status."""
    if _provider is None:
        yield None
        return
    fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _W3C_HEADERS}
    with tracer.start_as_current_span(
        f"{method} {route}",
        context=context_of(fields),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    ) as current:

        def status(code: int) -> None:
            current.set_attribute("http.response.status_code", code)
            if code >= 500:
                current.set_status(StatusCode.ERROR)

        yield status


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span | None]:
    """A span around work of our own (a provider call, a delivery), child of `parent` (a stored
    carrier) when given, else of the current span."""
    if _provider is None:
        yield None
        return
    with tracer.start_as_current_span(name, context=context_of(parent), kind=kind, attributes=attributes) as current:
        yield current


CORRELATION_ATTRIBUTE = "fte.correlation_id"


def tag_correlation(correlation_id: str) -> None:
    """Put the request's correlation id on the current span: a log line's id finds its trace
    (Jaeger: search by tag `fte.correlation_id=<id>`)."""
    if _provider is not None:
        trace.get_current_span().set_attribute(CORRELATION_ATTRIBUTE, correlation_id)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the active span, for log lines; None without one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
