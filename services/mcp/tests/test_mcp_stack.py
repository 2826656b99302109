"""The MCP server as its own process in the stack, driven by the `mcp` SDK's own client over
streamable HTTP (and stdio): the tool list follows the token's scopes, every tool runs against a
ticket made by a real WhatsApp webhook through the gateway, agent and Envoy, the mesh refuses
what a token may not do, and every call is audited without the customer's words."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import httpx2
import pytest
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte_gateway.settings import DEV_TWILIO_AUTH_TOKEN
from fte_runtime.grpc_client import connect
from fte_stack.fakes.twilio import inbound_whatsapp
from fte_stack.stack import Stack
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

pytestmark = pytest.mark.kafka

READ_TOOLS = {
    "search_knowledge_base",
    "get_article",
    "lookup_customer",
    "get_customer_history",
    "list_tickets",
    "get_ticket",
}
WRITE_TOOLS = {"reply_to_ticket", "escalate_ticket"}


def mcp_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports['mcp']}/mcp"


@asynccontextmanager
async def mcp_client(stack: Stack, token: str, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's client over streamable HTTP, sending `token` as its bearer. `mode="legacy"` speaks
    the handshake-era protocol (an initialize first), as older assistants do."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(mcp_url(stack), http_client=http), mode=mode) as client,
    ):
        yield client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    # The text an assistant reads is the same JSON as the structured answer.
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result


async def ok(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await call(client, tool, arguments)
    assert not result.is_error, result.structured_content
    answer: dict[str, Any] = result.structured_content
    return answer


def new_phone() -> str:
    """A new valid North American number: its exchange (the 3 digits after 415) is 200-999."""
    return f"+1415{2_000_000 + uuid.uuid4().int % 8_000_000:07d}"


async def whatsapp(stack: Stack, phone: str, body: str) -> None:
    gateway = f"http://127.0.0.1:{stack.ports['gateway']}"
    params, headers = inbound_whatsapp(f"{gateway}/webhooks/whatsapp", phone, body, auth_token=DEV_TWILIO_AUTH_TOKEN)
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(f"{gateway}/webhooks/whatsapp", data=params, headers=headers)
    assert resp.status_code in (200, 204), resp.text


async def until_found(client: Client, phone: str) -> dict[str, Any]:
    """lookup_customer, until the agent has resolved the sender and opened the ticket."""
    async with asyncio.timeout(90):
        while True:
            found = await ok(client, "lookup_customer", {"phone": phone})
            if found["found"] and found.get("tickets"):
                return found
            await asyncio.sleep(0.5)


async def test_the_tool_list_follows_the_tokens_scopes(full_stack: Stack) -> None:
    async with mcp_client(full_stack, full_stack.tokens["staff"]) as staff:
        tools = {t.name: t for t in (await staff.list_tools()).tools}
    assert set(tools) == READ_TOOLS | WRITE_TOOLS
    for tool in tools.values():
        assert tool.description, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema.get("additionalProperties") is False
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (tool.name in READ_TOOLS)
    reply = tools["reply_to_ticket"].input_schema
    assert set(reply["required"]) == {"ticket", "text"}
    assert reply["properties"]["text"]["maxLength"] == 5000
    assert "customer" in reply["properties"]["text"]["description"]
    statuses = tools["list_tickets"].input_schema["properties"]["status"]["anyOf"][0]["enum"]
    assert statuses == ["escalated", "in_progress", "open", "resolved"]  # from the contract's enum

    # Read-only tokens: the write tools are not there at all.
    for principal in ("assistant-reader", "kb-reader"):
        async with mcp_client(full_stack, full_stack.tokens[principal]) as reader:
            assert {t.name for t in (await reader.list_tools()).tools} == READ_TOOLS
    # Both protocol eras: the 2026 per-request one (the SDK's default) and the handshake one.
    async with mcp_client(full_stack, full_stack.tokens["staff"], mode="legacy") as legacy:
        assert legacy.protocol_version == "2025-11-25"
        assert {t.name for t in (await legacy.list_tools()).tools} == READ_TOOLS | WRITE_TOOLS
    async with mcp_client(full_stack, full_stack.tokens["assistant-reader"], mode="legacy") as legacy:
        assert {t.name for t in (await legacy.list_tools()).tools} == READ_TOOLS


async def test_a_missing_or_unknown_bearer_gets_401(full_stack: Stack) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as http:
        for auth in ({}, {"authorization": "Bearer not-a-token"}, {"authorization": "Basic eDp5"}):
            resp = await http.post(mcp_url(full_stack), json=body, headers={**headers, **auth})
            assert resp.status_code == 401, resp.text
            assert resp.headers["www-authenticate"].startswith("Bearer ")
            assert resp.json()["error"] == "invalid_token"
        assert (await http.get(f"http://127.0.0.1:{full_stack.ports['mcp']}/readyz")).status_code == 200
    # The SDK's own client gets no session either: its request fails with the server's error.
    with pytest.raises(BaseExceptionGroup) as caught:
        async with mcp_client(full_stack, "not-a-token") as client:
            await client.list_tools()
    assert [type(e) for e in leaves(caught.value)] == [MCPError]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


async def test_every_tool_on_a_real_ticket(full_stack: Stack) -> None:
    phone = new_phone()
    marker = uuid.uuid4().hex[:10]
    question = f"Hi, how do I reset my password? My reference is {marker}"
    await whatsapp(full_stack, phone, question)
    other = new_phone()  # a second customer, so that tickets take more than one page
    await whatsapp(full_stack, other, "Hello, do you have a mobile app?")

    async with mcp_client(full_stack, full_stack.tokens["assistant-reader"]) as reader:
        # The agent resolves the WhatsApp sender as a customer (the channel proves the number).
        found = await until_found(reader, phone)
        customer = found["customer"]
        assert customer["name"].startswith("customers/")
        assert {"kind": "phone", "value": phone, "verified": True, "evidence": "channel"}.items() <= next(
            i for i in customer["identifiers"] if i["kind"] == "phone"
        ).items()
        [ticket] = found["tickets"]
        assert ticket["channel"] == "whatsapp"
        name = ticket["name"]

        listed = await ok(reader, "list_tickets", {"customer": customer["name"], "channel": "whatsapp"})
        assert [t["name"] for t in listed["tickets"]] == [name]
        assert (await ok(reader, "list_tickets", {"customer": customer["name"], "channel": "email"}))["tickets"] == []
        await until_found(reader, other)
        first = await ok(reader, "list_tickets", {"page_size": 1})
        assert len(first["tickets"]) == 1
        second = await ok(reader, "list_tickets", {"page_size": 1, "page_token": first["next_page_token"]})
        assert len(second["tickets"]) == 1
        assert second["tickets"][0]["name"] != first["tickets"][0]["name"]

        got = await ok(reader, "get_ticket", {"ticket": name})
        assert got["ticket"]["customer"] == customer["name"]
        assert got["messages"][0]["author"] == "customer"
        assert got["messages"][0]["text"] == question

        history = await ok(reader, "get_customer_history", {"customer": customer["name"]})
        assert [t["name"] for t in history["tickets"]] == [name]
        assert question in [m["text"] for m in history["messages"]]

        hits = await ok(reader, "search_knowledge_base", {"query": "reset my password", "top_k": 3})
        assert 1 <= len(hits["results"]) <= 3
        best = hits["results"][0]
        assert best["article"].startswith("articles/")
        assert best["url"]
        article = await ok(reader, "get_article", {"article": best["article"]})
        assert article["article"]["title"] == best["title"]
        assert article["article"]["body"]

        assert (await ok(reader, "lookup_customer", {"email": f"nobody-{marker}@example.com"})) == {"found": False}

        # A bad argument is answered as a tool error naming the field, before the mesh is called.
        bad = await call(reader, "list_tickets", {"status": "closed"})
        assert bad.is_error
        assert "status" in bad.structured_content["error"]["message"]
        both = await call(reader, "lookup_customer", {"email": "a@example.com", "phone": phone})
        assert both.is_error
        assert "exactly one of email or phone" in both.structured_content["error"]["message"]

        # Not listed for this token, and refused when called anyway.
        refused = await call(reader, "reply_to_ticket", {"ticket": name, "text": "hello"})
        assert refused.is_error
        assert refused.structured_content["error"] == {
            "code": "PERMISSION_DENIED",
            "reason": "MISSING_SCOPE",
            "message": (
                "reply_to_ticket needs the scope tickets.write, which principal 'assistant-reader' does not hold"
            ),
        }

    # The mesh itself refuses what the token's scopes do not allow.
    async with mcp_client(full_stack, full_stack.tokens["kb-reader"]) as kb_only:
        denied = await call(kb_only, "lookup_customer", {"phone": phone})
        assert denied.is_error
        error = denied.structured_content["error"]
        assert (error["code"], error["reason"]) == ("PERMISSION_DENIED", "MISSING_SCOPE")
        assert "lacks scope 'identity.read'" in error["message"]
        assert (await call(kb_only, "get_ticket", {"ticket": name})).structured_content["error"]["reason"] == (
            "MISSING_SCOPE"
        )
    # Only what the scopes allow: identity.read without tickets.read gets the customer, no tickets.
    async with mcp_client(full_stack, full_stack.tokens["agent"]) as identity_only:
        partial = await ok(identity_only, "lookup_customer", {"phone": phone})
        assert partial["customer"]["name"] == customer["name"]
        assert "tickets" not in partial
        assert partial["omitted"] == ["tickets: the token lacks the scope tickets.read"]

    reply = f"You can reset it from Settings, then Security. ({marker})"
    async with mcp_client(full_stack, full_stack.tokens["staff"]) as staff:
        request_id = str(uuid.uuid4())
        for _ in range(2):  # a retry with the same request id sends once
            sent = await ok(
                staff,
                "reply_to_ticket",
                {"ticket": name, "text": reply, "request_id": request_id, "acting_for": "dana"},
            )
            assert sent["message"]["author"] == "human"
            assert sent["message"]["actor"] == "dana"
        escalated = await ok(
            staff, "escalate_ticket", {"ticket": name, "reason": "human_requested", "detail": "wants a call back"}
        )
        assert escalated["ticket"]["status"] == "escalated"
        assert escalated["ticket"]["escalation_reason"] == "human_requested"
        missing = await call(staff, "get_ticket", {"ticket": "tickets/no-such-ticket"})
        assert missing.structured_content["error"]["code"] == "NOT_FOUND"

    async with connect(f"127.0.0.1:{full_stack.ports['envoy']}", token=full_stack.tokens["staff"]) as channel:
        agent = agent_service_pb2_grpc.AgentServiceStub(channel)
        messages = await agent.ListMessages(agent_service_pb2.ListMessagesRequest(ticket=name))
        stored = await agent.GetTicket(agent_service_pb2.GetTicketRequest(name=name))
    human = [(m.text, m.actor) for m in messages.messages if m.author == agent_pb2.AUTHOR_HUMAN]
    assert human == [(reply, "dana")]  # sent once, and who it was sent for
    assert stored.ticket.status == agent_pb2.TICKET_STATUS_ESCALATED

    # Every call audited with its principal, tool and outcome; no customer words or phone in the log.
    audit = [
        json.loads(line)
        for line in (full_stack.state_dir / "mcp.log").read_text().splitlines()
        if '"mcp.tool_call"' in line
    ]
    seen = {(a["principal"], a["tool"], a["outcome"]) for a in audit}
    for tool in READ_TOOLS:
        assert ("assistant-reader", tool, "ok") in seen, tool
    assert ("assistant-reader", "reply_to_ticket", "denied") in seen
    assert ("assistant-reader", "list_tickets", "invalid") in seen
    assert ("kb-reader", "lookup_customer", "denied") in seen
    assert ("staff", "reply_to_ticket", "ok") in seen
    assert ("staff", "escalate_ticket", "ok") in seen
    assert ("staff", "get_ticket", "error") in seen
    replies = [a for a in audit if a["tool"] == "reply_to_ticket" and a["principal"] == "staff"]
    assert replies[-1]["arguments"] == {
        "acting_for": "dana",
        "request_id": request_id,
        "text": f"[{len(reply)} chars]",
        "ticket": name,
    }
    log_text = (full_stack.state_dir / "mcp.log").read_text()
    for private in (marker, phone, phone.lstrip("+"), other, "reset my password", "mobile app"):
        assert private not in log_text
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"http://127.0.0.1:{full_stack.ports['mcp-metrics']}/metrics")).text
    assert 'mcp_tool_calls_total{outcome="ok",principal="staff",tool="reply_to_ticket"}' in metrics
    assert 'mcp_tool_calls_total{outcome="denied",principal="kb-reader",tool="lookup_customer"}' in metrics


async def test_stdio_serves_one_local_assistant_with_its_token(full_stack: Stack) -> None:
    env = {
        "FTE_MCP_TOKEN": full_stack.tokens["kb-reader"],
        "FTE_MCP_AUTH_TOKENS_FILE": str(full_stack.state_dir / "auth-tokens.json"),
        "FTE_MCP_KNOWLEDGE_TARGET": f"127.0.0.1:{full_stack.ports['envoy']}",
        "FTE_MCP_IDENTITY_TARGET": f"127.0.0.1:{full_stack.ports['envoy']}",
        "FTE_MCP_AGENT_TARGET": f"127.0.0.1:{full_stack.ports['envoy']}",
    }
    server = StdioServerParameters(command=sys.executable, args=["-m", "fte_mcp", "stdio"], env=env)
    async with Client(server) as client:
        assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
        hits = await ok(client, "search_knowledge_base", {"query": "How do I export my data?"})
        assert hits["results"]
        assert all(r["article"].startswith("articles/") for r in hits["results"])
        refused = await call(client, "get_ticket", {"ticket": "tickets/anything"})
        assert refused.structured_content["error"]["reason"] == "MISSING_SCOPE"


async def until_refused(client: Client, tool: str, arguments: dict[str, Any], calls: int) -> dict[str, Any]:
    """Calls `tool` until the mesh refuses it as RESOURCE_EXHAUSTED (at most `calls` times); that error.
    Any other answer (a NOT_FOUND too) is a call served."""
    for _ in range(calls):
        result = await call(client, tool, arguments)
        error: dict[str, Any] = (result.structured_content or {}).get("error", {})
        if error.get("code") == "RESOURCE_EXHAUSTED":
            # What an assistant reads says it too, not only the structured answer.
            text = result.content[0].text  # type: ignore[union-attr]
            assert f"Retry after {error['retry_after_seconds']} seconds ({error['retry_at']})" in text
            return error
    raise AssertionError(f"{tool} was never refused in {calls} calls")


async def test_a_limited_call_says_which_limit_and_when_to_retry(full_stack: Stack) -> None:
    # team-script: 60 calls a minute, burst 5 (fte_stack.services.RATE_LIMITS).
    async with mcp_client(full_stack, full_stack.tokens["team-script"]) as script:
        error = await until_refused(script, "get_article", {"article": "no-such-article"}, 20)
        assert (error["reason"], error["limit"]) == ("RATE_LIMITED", "rate")
        assert 0 < error["retry_after_seconds"] <= 1.0
        assert "over its rate limit" in error["message"]
        await asyncio.sleep(error["retry_after_seconds"])
        again = await call(script, "get_article", {"article": "no-such-article"})
        assert again.structured_content["error"]["code"] == "NOT_FOUND"

    # trial-team: 5 calls a UTC day in each service (fte_stack.services.QUOTAS); these are its
    # AgentService ones.
    async with mcp_client(full_stack, full_stack.tokens["trial-team"]) as trial:
        error = await until_refused(trial, "list_tickets", {"page_size": 1}, 6)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    assert (error["reason"], error["limit"], error["window"], error["quota"]) == ("QUOTA_EXCEEDED", "quota", "day", 5)
    assert error["retry_at"] == midnight.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert abs(error["retry_after_seconds"] - (midnight - datetime.now(UTC)).total_seconds()) < 10
    assert "daily quota of 5 calls" in error["message"]
    log_lines = (full_stack.state_dir / "mcp.log").read_text().splitlines()
    audit = [json.loads(line) for line in log_lines if '"mcp.tool_call"' in line]
    assert {(a["principal"], a["outcome"], a["reason"]) for a in audit} >= {
        ("team-script", "error", "RATE_LIMITED"),
        ("trial-team", "error", "QUOTA_EXCEEDED"),
    }
