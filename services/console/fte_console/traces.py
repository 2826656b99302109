"""The trace page, for admins (SREs): one request's trace read from a Jaeger query API
(`TRACES_URL`), found by its correlation id (the gateway's `x-correlation-id`, every log line's
`correlation_id`) or its trace id, and shown as a waterfall: each span's service, operation, start
and duration against the whole trace, status, and its attributes on demand. Server-rendered (the
bars are SVG, the attributes a <details>), so it needs no script. Without `TRACES_URL` the page says
tracing is off.
"""

from __future__ import annotations

import asyncio
import urllib.error
from dataclasses import dataclass
from typing import Any

from fte_runtime import trace_query
from starlette.requests import Request
from starlette.responses import Response

from fte_console.accounts import Session
from fte_console.pages import admin_page, deps, render

# Indentation levels the stylesheet has (deeper spans are drawn at the last).
MAX_DEPTH = 12
# The SVG bar's width in its own units.
BAR_UNITS = 1000


@dataclass(frozen=True, slots=True)
class Bar:
    """A span's start and length on the trace's time axis, in BAR_UNITS."""

    x: float
    width: float


def bar(row: trace_query.SpanRow, total_ms: float) -> Bar:
    if total_ms <= 0:
        return Bar(0.0, float(BAR_UNITS))
    x = min(row.offset_ms / total_ms, 1.0) * BAR_UNITS
    # At least a sliver, so an instant span is still seen.
    return Bar(round(x, 1), round(max(row.duration_ms / total_ms * BAR_UNITS, 2.0), 1))


@admin_page
async def trace_page(request: Request, session: Session) -> Response:
    url = deps(request).settings.traces_url
    correlation_id = request.query_params.get("correlation_id", "").strip()
    trace_id = request.query_params.get("trace_id", "").strip().lower()
    context: dict[str, Any] = {
        "session": session,
        "enabled": bool(url),
        "correlation_id": correlation_id,
        "trace_id": trace_id,
        "tree": None,
        "bars": [],
        "error": "",
        "max_depth": MAX_DEPTH,
        "bar_units": BAR_UNITS,
    }
    if not url or not (correlation_id or trace_id):
        return render(request, "trace.html", **context)
    if trace_id and not trace_query.TRACE_ID.match(trace_id):
        return render(request, "trace.html", 400, **{**context, "error": "a trace id is 16 to 32 hex digits"})
    if not trace_id and not trace_query.CORRELATION_ID.match(correlation_id):
        return render(
            request, "trace.html", 400, **{**context, "error": "a correlation id is 1 to 128 letters, digits, . _ : -"}
        )
    try:
        if not trace_id:
            found = await asyncio.to_thread(trace_query.find_trace_id, url, correlation_id)
            trace_id = found or ""
        trace = await asyncio.to_thread(trace_query.get_trace, url, trace_id) if trace_id else None
    except (urllib.error.URLError, OSError, ValueError):
        return render(request, "trace.html", 502, **{**context, "error": "the trace store did not answer; try again"})
    if trace is None or not trace.get("spans"):
        what = f"trace {trace_id}" if trace_id else f"trace with correlation id {correlation_id}"
        return render(
            request, "trace.html", 404, **{**context, "error": f"no {what} (yet: spans arrive within seconds)"}
        )
    tree = trace_query.tree(trace)
    bars = [bar(row, tree.duration_ms) for row in tree.rows]
    return render(request, "trace.html", **{**context, "trace_id": tree.trace_id, "tree": tree, "bars": bars})
