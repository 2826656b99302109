"""The tools' inputs without servers: what the audit log may hold, enum choices read from the
contracts, and the stdio mode refusing to start without a token the mesh knows."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from fte_mcp.tools import TOOLS, EscalateTicket, ListTickets, LookupCustomer, ReplyToTicket
from fte_mcp.views import REASONS, STATUSES
from pydantic import ValidationError


def test_the_audit_summary_keeps_names_and_drops_free_text() -> None:
    reply = ReplyToTicket(ticket="tickets/T-1", text="Dear Ana, your refund of $20 is on its way", request_id="r-1")
    assert reply.audit_summary() == {"ticket": "tickets/T-1", "text": "[42 chars]", "request_id": "r-1"}
    who = LookupCustomer(email="ana@example.com")
    assert who.audit_summary() == {"email": "[15 chars]"}
    escalate = EscalateTicket(ticket="tickets/T-1", reason="refund", detail="angry about the refund")
    assert escalate.audit_summary() == {"ticket": "tickets/T-1", "reason": "refund", "detail": "[22 chars]"}


def test_enum_arguments_are_the_contracts_values() -> None:
    schema = ListTickets.model_json_schema()["properties"]
    assert schema["status"]["anyOf"][0]["enum"] == sorted(STATUSES.values())
    assert schema["escalation_reason"]["anyOf"][0]["enum"] == sorted(REASONS.values())
    with pytest.raises(ValidationError, match="'escalated', 'in_progress', 'open' or 'resolved'"):
        ListTickets.model_validate({"status": "closed"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ListTickets.model_validate({"colour": "red"})


def test_each_tool_says_what_it_needs() -> None:
    for tool in TOOLS.values():
        assert tool.description.endswith(f"Needs the scope {tool.scopes[0]}."), tool.name
        for name, field in tool.params.model_json_schema()["properties"].items():
            described = field.get("description") or any("description" in a for a in field.get("anyOf", []))
            assert described, f"{tool.name}.{name} has no description"
    assert {t.name for t in TOOLS.values() if t.write} == {"reply_to_ticket", "escalate_ticket"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set FTE_MCP_TOKEN"),
        (
            {"FTE_MCP_TOKEN": "nope", "FTE_MCP_AUTH_TOKENS": json.dumps({"t": {"principal": "p", "scopes": []}})},
            "FTE_MCP_TOKEN is not in the token configuration",
        ),
    ],
)
async def test_stdio_refuses_to_start_without_a_known_token(env: dict[str, str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fte_mcp", "stdio",
        env={"PATH": "/usr/bin:/bin", **env},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert message in err.decode()
    assert out == b""  # stdout is the protocol's: nothing else is written there
