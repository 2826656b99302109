"""The MCP server (the SDK's low-level `Server`): which tools a caller sees, and each call
validated, run against the mesh with the caller's own token, and audited.

Who the caller is: over streamable HTTP, the principal its bearer token maps to in the mesh's
token configuration (the SDK's bearer middleware puts it on the request); over stdio, the one
principal of the token the process was started with.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import mcp_types as types
from fte_client.v1.errors import status_details
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.requests import Request

from fte_mcp import audit
from fte_mcp.tools import TOOLS, Caller, Mesh, Tool, mesh_error

INSTRUCTIONS = (
    "Tools over the customer-support system: search and read the knowledge base, look customers up "
    "and read their history, list and read tickets, and (for tokens allowed to) reply to and escalate "
    "tickets. Every call acts as this connection's token, with that token's scopes. A call refused "
    "for the token's rate limit or daily/monthly quota says when to call again (retry_after_seconds): "
    "wait that long rather than retrying at once."
)


# Codes whose details the services write for their callers (the rest may name hosts or internals).
_CALLER_FACING = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
    }
)


def _caller(ctx: ServerRequestContext[Any, Any], stdio_caller: Caller | None) -> Caller:
    request = ctx.request
    if isinstance(request, Request):
        user = request.scope.get("user")
        if isinstance(user, AuthenticatedUser):
            access = user.access_token
            return Caller(access.client_id, frozenset(access.scopes), access.token)
    if stdio_caller is not None:
        return stdio_caller
    # The HTTP app refuses a request without a known bearer before it gets here.
    raise MCPError(types.INVALID_REQUEST, "no authenticated caller")


def _schema(tool: Tool) -> dict[str, Any]:
    schema = tool.params.model_json_schema()
    schema.pop("title", None)
    return schema


def describe(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=_schema(tool),
        annotations=types.ToolAnnotations(
            title=tool.title,
            read_only_hint=not tool.write,
            destructive_hint=False,
            idempotent_hint=not tool.write,
            open_world_hint=False,
        ),
    )


def _result(payload: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    text = json.dumps(payload, ensure_ascii=False, indent=1)
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=payload, is_error=error)


def _error(code: str, reason: str, message: str, **more: Any) -> types.CallToolResult:
    return _result({"error": {"code": code, "reason": reason, "message": message, **more}}, error=True)


# What ran out, by the mesh's ErrorInfo reason.
_LIMITS = {"RATE_LIMITED": "rate", "QUOTA_EXCEEDED": "quota"}


def _exhausted(exc: grpc.aio.AioRpcError, reason: str, message: str) -> types.CallToolResult:
    """A RESOURCE_EXHAUSTED answer with which limit ran out and when to call again (its RetryInfo),
    so an assistant waits instead of retrying at once or giving up."""
    details = status_details(exc)
    more: dict[str, Any] = {"limit": _LIMITS.get(reason, "unknown")}
    if "window" in details.metadata:
        more["window"] = details.metadata["window"]
    if details.metadata.get("limit", "").isdigit():
        more["quota"] = int(details.metadata["limit"])
    if details.retry_delay is not None:
        # Rounded up, so calling at the time shown is never too early: tenths of a second for a
        # rate limit, whole seconds beyond ten.
        delay = details.retry_delay
        seconds: float = math.ceil(delay) if delay >= 10 else math.ceil(delay * 10) / 10
        retry_at = datetime.now(UTC) + timedelta(seconds=seconds)
        more["retry_after_seconds"] = seconds
        more["retry_at"] = details.metadata.get("resets_at") or retry_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        message = f"{message}. Retry after {seconds} seconds ({more['retry_at']})."
    return _error("RESOURCE_EXHAUSTED", reason, message, **more)


def create_server(mesh: Mesh, stdio_caller: Caller | None = None) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = _caller(ctx, stdio_caller)
        return types.ListToolsResult(tools=[describe(t) for t in TOOLS.values() if t.allowed(caller)])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = _caller(ctx, stdio_caller)
        tool = TOOLS.get(params.name)
        if tool is None:
            # The name is the caller's text: not a metrics label, not logged.
            audit.record(caller, "(unknown)", {"name": f"[{len(params.name)} chars]"}, "unknown_tool", 0.0)
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}")
        started = time.monotonic()
        try:
            args = tool.params.model_validate(params.arguments or {})
        except ValidationError as exc:
            audit.record(caller, tool.name, {}, "invalid", time.monotonic() - started)
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return _error("INVALID_ARGUMENT", "INVALID_ARGUMENTS", problems)
        summary = args.audit_summary()
        if not tool.allowed(caller):
            audit.record(caller, tool.name, summary, "denied", time.monotonic() - started, code="PERMISSION_DENIED")
            missing = ", ".join(sorted(set(tool.scopes) - caller.scopes))
            return _error(
                "PERMISSION_DENIED",
                "MISSING_SCOPE",
                f"{tool.name} needs the scope {missing}, which principal '{caller.principal}' does not hold",
            )
        try:
            payload = await tool.run(mesh, caller, args)
        except grpc.aio.AioRpcError as exc:
            code, reason = mesh_error(exc)
            outcome = "denied" if exc.code() == grpc.StatusCode.PERMISSION_DENIED else "error"
            audit.record(caller, tool.name, summary, outcome, time.monotonic() - started, code=code, reason=reason)
            # The mesh's own words for what the caller can act on; never its internals.
            message = exc.details() or code
            if code not in _CALLER_FACING:
                message = "the support system did not answer; try again"
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return _exhausted(exc, reason, message)
            return _error(code, reason, message)
        audit.record(caller, tool.name, summary, "ok", time.monotonic() - started)
        return _result(payload)

    return Server(
        "fte",
        version="1.0.0",
        title="Customer Success FTE",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
