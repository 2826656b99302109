"""Prometheus metrics shared by every service, and the HTTP endpoint that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server.",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
KAFKA_CONSUMED = Counter(
    "kafka_consumed_total",
    "Records consumed, by topic and outcome (ok, retried, dead_lettered).",
    ["topic", "outcome"],
)
KAFKA_PRODUCED = Counter("kafka_produced_total", "Records produced, by topic.", ["topic"])
# Principals with a quota only (internal teams): a handful of label values.
QUOTA_LIMIT = Gauge("quota_limit_calls", "Calls a principal's quota allows in its window.", ["principal", "window"])
QUOTA_USED = Gauge(
    "quota_used_calls",
    "Calls counted in a principal's current window by every replica, as of this replica's last flush.",
    ["principal", "window"],
)
QUOTA_REFUSED = Counter(
    "quota_refused_total", "Calls refused because the principal's quota was used up.", ["principal", "window"]
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on a background thread (0 disables it)."""
    if port:
        start_http_server(port, addr=host)
