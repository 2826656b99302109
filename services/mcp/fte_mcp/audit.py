"""Every tool call, recorded: one structured log line (principal, tool, a summary of the arguments
without their free text, outcome) and the `mcp_tool_calls_total` / `mcp_tool_call_seconds` metrics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from fte_mcp.tools import Caller

log = logging.getLogger("fte.mcp.audit")

TOOL_CALLS = Counter(
    "mcp_tool_calls_total",
    "MCP tool calls, by tool, principal and outcome (ok, error, denied, invalid, unknown_tool).",
    ["tool", "principal", "outcome"],
)
TOOL_LATENCY = Histogram(
    "mcp_tool_call_seconds",
    "Time to answer an MCP tool call, by tool.",
    ["tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def record(
    caller: Caller,
    tool: str,
    arguments: dict[str, Any],
    outcome: str,
    seconds: float,
    *,
    code: str = "",
    reason: str = "",
) -> None:
    TOOL_CALLS.labels(tool, caller.principal, outcome).inc()
    TOOL_LATENCY.labels(tool).observe(seconds)
    log.info(
        "tool call",
        extra={
            "audit": "mcp.tool_call",
            "principal": caller.principal,
            "tool": tool,
            "arguments": arguments,
            "outcome": outcome,
            "code": code or ("OK" if outcome == "ok" else ""),
            "reason": reason,
            "duration_ms": round(seconds * 1000, 1),
        },
    )
