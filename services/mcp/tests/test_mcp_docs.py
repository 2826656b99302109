"""docs/apis/mcp.md's examples, run against the stack: the Python client, both assistant
configurations (HTTP and stdio) and the error shown."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fte_stack.stack import Stack
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "apis" / "mcp.md"
PLACEHOLDER = "<token from .local/stack/tokens.json>"
READ_TOOLS = "get_article, get_customer_history, get_ticket, list_tickets, lookup_customer, search_knowledge_base"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def config(kind: str) -> dict[str, Any]:
    """The `mcpServers` entry of the doc's HTTP or stdio configuration."""
    for block in blocks("json"):
        entry: dict[str, Any] = json.loads(block).get("mcpServers", {}).get("fte", {})
        if ("url" in entry) == (kind == "http") and entry:
            return entry
    raise AssertionError(f"no {kind} configuration in {DOC}")


async def test_the_python_example_lists_tools_and_searches(full_stack: Stack) -> None:
    [example] = blocks("python")
    env = {
        "FTE_MCP_URL": f"http://127.0.0.1:{full_stack.ports['mcp']}/mcp",
        "FTE_TOKEN": full_stack.tokens["assistant-reader"],
        "PATH": "/usr/bin:/bin",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", example, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == f"tools: {READ_TOOLS}"
    assert 1 <= len(lines[1:]) <= 3
    for line in lines[1:]:
        assert re.fullmatch(r"\d\.\d\d  .+  \S+", line), line


async def test_the_curl_example_lists_the_tools(full_stack: Stack) -> None:
    [example] = blocks("sh")
    command = example.replace(":8095/", f":{full_stack.ports['mcp']}/")
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", command, env={"TOKEN": full_stack.tokens["kb-reader"], "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    answer = json.loads(out)
    assert ", ".join(sorted(t["name"] for t in answer["result"]["tools"])) == READ_TOOLS


async def test_the_http_configuration_connects(full_stack: Stack) -> None:
    entry = config("http")
    assert entry["type"] == "http"
    url = entry["url"].replace(":8095/", f":{full_stack.ports['mcp']}/")
    headers = {k: v.replace(PLACEHOLDER, full_stack.tokens["staff"]) for k, v in entry["headers"].items()}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"reply_to_ticket", "escalate_ticket"} <= names


async def test_the_stdio_configuration_starts_the_server(full_stack: Stack) -> None:
    entry = config("stdio")
    env = dict(entry["env"])
    env["FTE_MCP_TOKEN"] = env["FTE_MCP_TOKEN"].replace(PLACEHOLDER, full_stack.tokens["kb-reader"])
    # This stack's files and Envoy, where `make run` has its own.
    assert env["FTE_MCP_AUTH_TOKENS_FILE"] == ".local/stack/auth-tokens.json"
    env["FTE_MCP_AUTH_TOKENS_FILE"] = str(full_stack.state_dir / "auth-tokens.json")
    for target in ("KNOWLEDGE", "IDENTITY", "AGENT"):
        env[f"FTE_MCP_{target}_TARGET"] = f"127.0.0.1:{full_stack.ports['envoy']}"
    assert (REPO / entry["command"]).exists(), "make setup creates the virtualenv the example runs"
    server = StdioServerParameters(command=entry["command"], args=entry["args"], env=env, cwd=REPO)
    async with Client(server) as client:
        assert ", ".join(sorted(t.name for t in (await client.list_tools()).tools)) == READ_TOOLS
        result = await client.call_tool("get_article", {"article": "no-such-article-here"})
    assert isinstance(result, CallToolResult)
    assert result.is_error
    assert result.structured_content["error"]["code"] == "NOT_FOUND"


async def test_the_error_shown_is_what_a_refused_call_answers(full_stack: Stack) -> None:
    [shown, _] = [json.loads(b) for b in blocks("json") if '"error"' in b]
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {full_stack.tokens['kb-reader']}"}, timeout=30) as http,
        Client(streamable_http_client(f"http://127.0.0.1:{full_stack.ports['mcp']}/mcp", http_client=http)) as c,
    ):
        result = await c.call_tool("lookup_customer", {"email": "someone@example.com"})
    assert isinstance(result, CallToolResult)
    assert result.is_error
    assert result.structured_content == shown


async def test_the_quota_error_shown_is_what_a_used_up_quota_answers(full_stack: Stack) -> None:
    [_, shown] = [json.loads(b) for b in blocks("json") if '"error"' in b]
    headers = {"Authorization": f"Bearer {full_stack.tokens['trial-team']}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"http://127.0.0.1:{full_stack.ports['mcp']}/mcp", http_client=http)) as c,
    ):
        for _ in range(6):  # 5 a day, whatever other tests spent of them
            result = await c.call_tool("list_tickets", {"page_size": 1})
            assert isinstance(result, CallToolResult)
            if result.is_error:
                break
    assert result.is_error
    error, example = result.structured_content["error"], shown["error"]
    assert error.keys() == example.keys()
    # The same answer, but for the time it is refused at.
    same = ("code", "reason", "limit", "window", "quota")
    assert {k: error[k] for k in same} == {k: example[k] for k in same}
    pattern = re.escape(example["message"])
    for changing in ("2026-12-03T00:00:00Z", "50400"):
        pattern = pattern.replace(re.escape(changing), r"\S+?")
    assert re.fullmatch(pattern, error["message"]), error["message"]
