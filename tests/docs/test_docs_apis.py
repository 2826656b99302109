"""Every example in the API docs (docs/apis/*.md) and the client's README runs against the real
stack, and what a doc shows as its output is in what it printed. Each doc's scopes table is the
one its service enforces.

Blocks are run in order, each in its own shell: `bash` as written, `python` with the project's
interpreter. A doc's first `bash` block sets the environment (target, token) and runs before
each of its other blocks; the test gives it the stack's ports, and `.local/stack/tokens.json` is
the stack's. A `text` block right after a runnable one is its output: each of its lines (`...`
aside) must appear in what the block printed. Each doc's table of limits is the stack's."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fte.agent.v1 import agent_service_pb2
from fte_agent.servicer import SCOPES as AGENT_SCOPES
from fte_client import v1
from fte_gateway.settings import DEV_TWILIO_AUTH_TOKEN
from fte_identity.servicer import METHOD_SCOPES as IDENTITY_SCOPES
from fte_knowledge.server import SCOPES as KNOWLEDGE_SCOPES
from fte_stack.fakes.twilio import inbound_whatsapp
from fte_stack.services import GRANTS, QUOTAS, RATE_LIMITS
from fte_stack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
API_DOCS = {
    "knowledge": ROOT / "docs" / "apis" / "knowledge.md",
    "identity": ROOT / "docs" / "apis" / "identity.md",
    "tickets": ROOT / "docs" / "apis" / "tickets.md",
}
DOCS = [*API_DOCS.values(), ROOT / "clients" / "python" / "fte-client" / "README.md"]
SCOPES: dict[str, Mapping[str, str]] = {
    "knowledge": KNOWLEDGE_SCOPES,
    "identity": IDENTITY_SCOPES,
    "tickets": AGENT_SCOPES,
}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
RUNNABLE = ("bash", "python")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    output: str | None = None  # the text block showing what it prints


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = list(FENCE.finditer(text))
    result: list[Block] = []
    for i, match in enumerate(found):
        if match.group(1) not in RUNNABLE:
            continue
        following = found[i + 1] if i + 1 < len(found) else None
        output = None
        if following and following.group(1) == "text" and not text[match.end() : following.start()].strip():
            output = following.group(2)
        result.append(Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1, output))
    return result


def grpcurl_dir() -> str:
    path = subprocess.run([str(ROOT / "scripts" / "grpcurl.sh")], capture_output=True, text=True, check=True)
    return str(Path(path.stdout.strip()).parent)


@pytest.fixture(scope="module")
def workdir(full_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as a checkout running `make run`: the stack's tokens and the protos."""
    where = tmp_path_factory.mktemp("docs")
    (where / ".local").mkdir()
    (where / ".local" / "stack").symlink_to(full_stack.state_dir)
    (where / "protos").symlink_to(ROOT / "protos")
    return where


def environment(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTE_")}
    env["PATH"] = f"{grpcurl_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["FTE_TARGET"] = f"127.0.0.1:{stack.ports['envoy']}"
    for name, service in (("KNOWLEDGE", "knowledge"), ("IDENTITY", "identity"), ("TICKETS", "agent")):
        env[f"FTE_{name}"] = f"127.0.0.1:{stack.ports[service]}"
    return env


def run(block: Block, setup: Block | None, env: dict[str, str], cwd: Path) -> str:
    prelude = f"set -euo pipefail\n{setup.code if setup else ''}\n"
    if block.lang == "bash":
        argv, stdin = ["bash", "-c", prelude + block.code], None
    else:
        argv, stdin = ["bash", "-c", prelude + f'exec "{sys.executable}" -'], block.code
    done = subprocess.run(argv, check=False, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, f"the example exited with {done.returncode}:\n{block.code}\n--- printed:\n{printed}"
    return printed


async def seed_ticket(stack: Stack) -> None:
    """A customer's WhatsApp message, so the tickets doc has a ticket to show."""
    gateway = f"http://127.0.0.1:{stack.ports['gateway']}/webhooks/whatsapp"
    phone = f"+1415{2_000_000 + uuid.uuid4().int % 8_000_000:07d}"
    auth = stack.info.extra.get("twilio_auth_token", DEV_TWILIO_AUTH_TOKEN) if stack.info else DEV_TWILIO_AUTH_TOKEN
    params, headers = inbound_whatsapp(gateway, phone, "How do I reset my password?", auth_token=auth)
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(gateway, data=params, headers=headers)).status_code in (200, 204)
    async with v1.connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens["staff"]) as client:
        for _ in range(300):
            listed = await client.tickets.ListTickets(agent_service_pb2.ListTicketsRequest(page_size=1))
            if listed.tickets:
                return
            await asyncio.sleep(0.2)
    raise AssertionError("the seeded message made no ticket")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
async def test_every_example_runs(doc: Path, full_stack: Stack, workdir: Path) -> None:
    if doc == API_DOCS["tickets"]:
        await seed_ticket(full_stack)
    found = blocks(doc)
    setup = next((b for b in found if b.lang == "bash"), None)
    examples = [b for b in found if b is not setup]
    assert len(examples) >= 2, f"{doc.name} has too few examples to be a guide"
    env = environment(full_stack)
    for block in examples:
        printed = await asyncio.to_thread(run, block, setup, env, workdir)
        for line in (block.output or "").splitlines():
            wanted = line.strip()
            if wanted and wanted != "...":
                assert wanted in printed, f"{doc.name}:{block.line} did not print {wanted!r}; it printed:\n{printed}"


SCOPE_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*`([\w.]+)`\s*\|", re.MULTILINE)


@pytest.mark.parametrize("api", sorted(API_DOCS))
def test_the_scopes_table_is_the_one_the_service_enforces(api: str) -> None:
    text = API_DOCS[api].read_text(encoding="utf-8")
    section = text.split("## Scopes", 1)[1].split("\n## ", 1)[0]
    assert dict(SCOPE_ROW.findall(section)) == dict(SCOPES[api])


LIMIT_ROW = re.compile(
    r"^\|\s*`([\w-]+)`\s*\|\s*(?:(\d+) a minute, burst (\d+)|none)\s*\|\s*(\d+|none)\s*\|\s*(\d+|none)\s*\|",
    re.MULTILINE,
)
SCOPE_PREFIX = {"knowledge": "kb.", "identity": "identity.", "tickets": "tickets."}
Limits = tuple[tuple[float, int] | None, int | None, int | None]


@pytest.mark.parametrize("api", sorted(API_DOCS))
def test_the_limits_table_is_the_one_the_stack_configures(api: str) -> None:
    text = API_DOCS[api].read_text(encoding="utf-8")
    section = text.split("## Rate limits, quotas and deadlines", 1)[1].split("\n## ", 1)[0]
    shown: dict[str, Limits] = {
        principal: (
            (float(per_minute), int(burst)) if per_minute else None,
            None if day == "none" else int(day),
            None if month == "none" else int(month),
        )
        for principal, per_minute, burst, day, month in LIMIT_ROW.findall(section)
    }
    # Every limited principal that holds a scope of this API, and no other.
    configured: dict[str, Limits] = {
        principal: (
            (float(RATE_LIMITS[principal][0]), RATE_LIMITS[principal][1]) if principal in RATE_LIMITS else None,
            *QUOTAS.get(principal, (None, None)),
        )
        for principal in RATE_LIMITS.keys() | QUOTAS.keys()
        if any(scope.startswith(SCOPE_PREFIX[api]) for scope in GRANTS[principal])
    }
    assert shown == configured
