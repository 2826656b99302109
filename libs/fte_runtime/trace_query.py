"""Reading traces back from a Jaeger query API (`/api/traces`), and laying one out as a tree of
spans: what the Jaeger UI's timeline shows, for a terminal (`python -m fte_stack trace`) and for the
console's trace page. Plain HTTP with the standard library, blocking: async callers run it in a
thread.

A trace is Jaeger's JSON: `traceID`, `spans` (each with `spanID`, `operationName`, `processID`,
`references`, `startTime` and `duration` in microseconds, `tags`) and `processes` (each with
`serviceName`).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from fte_runtime.tracing import CORRELATION_ATTRIBUTE

# Where a request's trace starts: the gateway for customers' messages; otherwise (the console, a
# staff tool) the first service that served it.
ENTRY_SERVICES = ("fte-gateway", "fte-agent", "fte-console", "fte-notifier", "fte-identity", "fte-knowledge")
TRACE_ID = re.compile(r"^[0-9a-f]{16,32}$")
# What a correlation id may look like (the gateway mints or accepts only these).
CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TIMEOUT_SECONDS = 10.0


def find_traces(query_url: str, service: str, *, tags: dict[str, str] | None = None, limit: int = 20) -> list[Any]:
    """Traces of `service` from the last hour, newest first."""
    query = {"service": service, "limit": str(limit), "lookback": "1h"}
    if tags:
        query["tags"] = json.dumps(tags)
    url = f"{query_url.rstrip('/')}/api/traces?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310 - a configured URL
        data: list[Any] = json.load(resp).get("data") or []
    return data


def get_trace(query_url: str, trace_id: str) -> dict[str, Any] | None:
    """One trace by id, or None when Jaeger has none (yet)."""
    try:
        url = f"{query_url.rstrip('/')}/api/traces/{urllib.parse.quote(trace_id)}"
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310 - a configured URL
            data: list[dict[str, Any]] = json.load(resp).get("data") or []
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise
    return data[0] if data else None


def find_trace_id(query_url: str, correlation_id: str) -> str | None:
    """The id of the trace whose server spans carry `correlation_id`, looked up from the entry
    services in turn; None when no service has one."""
    for service in ENTRY_SERVICES:
        found = find_traces(query_url, service, tags={CORRELATION_ATTRIBUTE: correlation_id}, limit=1)
        if found:
            return str(found[0]["traceID"])
    return None


def services_of(trace: dict[str, Any]) -> dict[str, set[str]]:
    """Service name -> the operation names of its spans in `trace`."""
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    out: dict[str, set[str]] = {}
    for span in trace["spans"]:
        out.setdefault(processes[span["processID"]], set()).add(span["operationName"])
    return out


@dataclass(frozen=True, slots=True)
class SpanRow:
    """One span in tree order: its depth under the root, and its times relative to the trace."""

    span_id: str
    depth: int
    service: str
    operation: str
    offset_ms: float  # from the trace's first span
    duration_ms: float
    status: str  # "error", "ok" or "unset" (OpenTelemetry's status code)
    attributes: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TraceTree:
    trace_id: str
    rows: tuple[SpanRow, ...]
    services: tuple[str, ...]  # in the order they first appear
    duration_ms: float  # from the first span's start to the last one's end


def tree(trace: dict[str, Any]) -> TraceTree:
    """The spans depth-first, each parent before its children, siblings by start time; a span whose
    parent has not arrived (yet) is a root of its own."""
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span.get("references") or () if r["spanID"] in spans]
        children.setdefault(parents[0] if parents else None, []).append(span)
    start = min((s["startTime"] for s in trace["spans"]), default=0)
    end = max((s["startTime"] + s["duration"] for s in trace["spans"]), default=0)
    rows: list[SpanRow] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            tags = {t["key"]: t.get("value") for t in span.get("tags") or ()}
            rows.append(
                SpanRow(
                    span_id=span["spanID"],
                    depth=depth,
                    service=processes.get(span["processID"], "?"),
                    operation=span["operationName"],
                    offset_ms=(span["startTime"] - start) / 1000,
                    duration_ms=span["duration"] / 1000,
                    status=_status(tags),
                    attributes=tuple(sorted((k, str(v)) for k, v in tags.items())),
                )
            )
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    services = tuple(dict.fromkeys(r.service for r in rows))
    return TraceTree(trace["traceID"], tuple(rows), services, (end - start) / 1000)


def _status(tags: dict[str, Any]) -> str:
    code = str(tags.get("otel.status_code", "")).lower()
    if code == "error" or tags.get("error") is True:
        return "error"
    return "ok" if code == "ok" else "unset"


def render_tree(trace: dict[str, Any]) -> str:
    """The trace as an indented tree, one span a line: offset from the start, duration, service,
    operation."""
    laid_out = tree(trace)
    lines = [f"trace {laid_out.trace_id}: {len(laid_out.rows)} spans, {len(laid_out.services)} services"]
    lines += [
        f"{r.offset_ms:9.1f} ms {r.duration_ms:9.1f} ms  {'  ' * r.depth}{r.service}: {r.operation}"
        for r in laid_out.rows
    ]
    return "\n".join(lines)
