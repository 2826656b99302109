"""Laying a Jaeger trace out as a tree (the terminal's `fte_stack trace` and the console's trace
page share it): parents before children, siblings by start, times relative to the trace, status
from OpenTelemetry's tags, and a span whose parent has not arrived shown as a root of its own."""

from __future__ import annotations

from typing import Any

from fte_runtime.trace_query import render_tree, tree


def span(
    span_id: str,
    op: str,
    process: str,
    start: int,
    duration: int,
    *,
    parent: str = "",
    tags: dict[str, Any] | None = None,
) -> Any:
    return {
        "spanID": span_id,
        "operationName": op,
        "processID": process,
        "startTime": start,
        "duration": duration,
        "references": [{"refType": "CHILD_OF", "traceID": "t" * 32, "spanID": parent}] if parent else [],
        "tags": [{"key": k, "type": "string", "value": v} for k, v in (tags or {}).items()],
    }


TRACE = {
    "traceID": "ab" * 16,
    "processes": {"p1": {"serviceName": "fte-gateway"}, "p2": {"serviceName": "fte-agent"}},
    "spans": [
        # Out of order, as Jaeger returns them.
        span("c2", "second child", "p2", 1_006_000, 1_000, parent="r1", tags={"otel.status_code": "ERROR"}),
        span("r1", "POST /webhooks/whatsapp", "p1", 1_000_000, 10_000, tags={"otel.status_code": "OK"}),
        span("c1", "first child", "p2", 1_002_000, 2_000, parent="r1", tags={"fte.correlation_id": "abc"}),
        span("g1", "grandchild", "p2", 1_002_500, 500, parent="c1"),
        span("o1", "orphan", "p2", 1_009_000, 2_000, parent="not-here-yet"),
    ],
}


def test_spans_are_laid_out_depth_first_with_times_relative_to_the_trace() -> None:
    laid_out = tree(TRACE)
    assert [(r.span_id, r.depth) for r in laid_out.rows] == [("r1", 0), ("c1", 1), ("g1", 2), ("c2", 1), ("o1", 0)]
    assert laid_out.services == ("fte-gateway", "fte-agent")
    assert laid_out.duration_ms == 11.0  # the orphan ends last
    grandchild = laid_out.rows[2]
    assert (grandchild.offset_ms, grandchild.duration_ms) == (2.5, 0.5)
    assert [r.status for r in laid_out.rows] == ["ok", "unset", "unset", "error", "unset"]
    assert ("fte.correlation_id", "abc") in laid_out.rows[1].attributes


def test_the_terminal_tree_has_one_line_a_span_indented_by_depth() -> None:
    lines = render_tree(TRACE).splitlines()
    assert lines[0] == f"trace {'ab' * 16}: 5 spans, 2 services"
    assert lines[1].endswith(" ms  fte-gateway: POST /webhooks/whatsapp")
    assert lines[3].split(" ms ")[-1] == "     fte-agent: grandchild"
    assert len(lines) == 6
