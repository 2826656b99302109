"""The gateway's own Prometheus metrics (served at /metrics with the shared ones)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests, by route and status code.", ["route", "method", "code"]
)
HTTP_LATENCY = Histogram(
    "gateway_http_request_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENTS_PUBLISHED = Counter("gateway_events_published_total", "Events acknowledged by Kafka, by kind.", ["kind"])
REJECTED = Counter("gateway_rejected_total", "Requests refused, by route and reason.", ["route", "reason"])
GMAIL_SYNCS = Counter(
    "gateway_gmail_syncs_total", "Gmail history syncs, by trigger and outcome.", ["trigger", "outcome"]
)
