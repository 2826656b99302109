"""One customer message is one trace across the mesh: a signed WhatsApp webhook into the real
gateway, through the broker, the agent, Envoy, identity, knowledge and the notifier, to the call
the Twilio SDK makes to the provider fake. Read back from a real Jaeger's query API; every
service and Envoy export to it over OTLP, as `make run TRACES=1` starts them. Then shown by the
runbook's command and by the console's trace page."""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fte_runtime.trace_query import find_traces, services_of
from fte_stack.fakes.twilio import inbound_whatsapp
from fte_stack.jaeger import wait_for_trace
from fte_stack.providers import TWILIO_AUTH_TOKEN
from fte_stack.stack import Stack, StackConfig

MESH = {"fte-gateway", "fte-envoy", "fte-agent", "fte-identity", "fte-knowledge", "fte-notifier"}


def provider_call(spans: dict[str, set[str]]) -> bool:
    # The notifier's span around the Twilio SDK call, and the SDK's own HTTP request under it.
    ops = spans.get("fte-notifier", set())
    return any(op.startswith("twilio ") for op in ops) and "POST" in ops


def complete(trace: dict[str, Any]) -> bool:
    spans = services_of(trace)
    return set(spans) >= MESH and provider_call(spans)


# Its own stack (with Jaeger): a full start takes minutes on a busy 2-core machine.
@pytest.mark.timeout(900)
async def test_one_customer_message_is_one_trace_across_the_mesh(stack_root: Path) -> None:
    config = StackConfig.for_tests(stack_root / "traced", traces=True)
    async with Stack(config) as stack:
        assert stack.jaeger is not None
        ui = stack.jaeger.ui_url
        assert stack.providers is not None
        twilio = stack.providers.twilio
        url = f"http://127.0.0.1:{stack.ports['gateway']}/webhooks/whatsapp"
        phone = "+1415555" + str(secrets.randbelow(9000) + 1000)
        params, headers = inbound_whatsapp(url, phone, "How do I reset my password?", auth_token=TWILIO_AUTH_TOKEN)
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(url, data=params, headers=headers)
        assert resp.status_code in (200, 204), resp.text
        correlation_id = resp.headers["x-correlation-id"]

        # The reply reached the provider fake.
        deadline = time.monotonic() + 120
        while not any(m.to == f"whatsapp:{phone}" for m in twilio.messages()):
            assert time.monotonic() < deadline, "no reply reached the fake Twilio"
            await asyncio.sleep(0.5)

        # The correlation id of the webhook's log lines finds its trace; there is exactly one.
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            found = await asyncio.to_thread(find_traces, ui, "fte-gateway", tags={"fte.correlation_id": correlation_id})
            if not found:
                await asyncio.sleep(0.5)
        assert len(found) == 1, f"{len(found)} traces for one message"
        trace_id = found[0]["traceID"]

        trace = await wait_for_trace(ui, trace_id, complete, timeout=60)
        assert trace is not None
        spans = services_of(trace)
        assert set(spans) >= MESH, f"services in the trace: {sorted(spans)}"
        # The broker hop: the gateway's publish and the agent's processing of that record.
        assert "publish fte.tickets.incoming" in spans["fte-gateway"]
        assert "process fte.tickets.incoming" in spans["fte-agent"]
        # The agent's calls, as it made them and as each service served them.
        assert "/fte.identity.v1.IdentityService/ResolveCustomer" in spans["fte-identity"] | spans["fte-agent"]
        assert any(op.startswith("/fte.knowledge.v1.KnowledgeService/") for op in spans["fte-knowledge"])
        assert "/fte.notifier.v1.NotifierService/SendMessage" in spans["fte-notifier"]
        assert "deliver" in spans["fte-notifier"]
        assert provider_call(spans), f"notifier spans: {sorted(spans['fte-notifier'])}"

        # One connected tree: a single root (the webhook request), every other span's parent in it.
        ids = {span["spanID"] for span in trace["spans"]}
        roots = [span for span in trace["spans"] if not span["references"]]
        assert len(roots) == 1, [r["operationName"] for r in roots]
        assert trace["processes"][roots[0]["processID"]]["serviceName"] == "fte-gateway"
        for span in trace["spans"]:
            for ref in span["references"]:
                assert ref["traceID"] == trace_id
                assert ref["spanID"] in ids, f"{span['operationName']} has a parent outside the trace"

        # The runbook's command: the tree, webhook first, the provider call in it.
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fte_stack", "trace", "--jaeger", ui, "--correlation-id", correlation_id,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await cli.communicate()
        assert cli.returncode == 0
        tree = out.decode().splitlines()
        # Spans may still be arriving (the delivery outcome's relay and its consumer join the trace).
        header = re.fullmatch(rf"trace {trace_id}: (\d+) spans, (\d+) services", tree[0])
        assert header is not None, tree[0]
        assert int(header[1]) >= len(trace["spans"])
        assert len(tree) == int(header[1]) + 1
        assert " ms  fte-gateway: " in tree[1]  # the root, not indented
        assert any("fte-notifier: twilio " in line for line in tree)

        # The console's trace page (the trace UI `make run TRACES=1` prints), by correlation id.
        password = (stack.state_dir / "console-admin-password").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports['console']}", timeout=30) as console:
            login = await console.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert token is not None
            form = {"csrf_token": token[1], "username": "admin", "password": password}
            assert (await console.post("/login", data=form)).status_code == 303
            page = await console.get("/traces", params={"correlation_id": correlation_id})
            missing = await console.get("/traces", params={"trace_id": "0" * 32})
        assert page.status_code == 200, page.text
        assert f"<code>{trace_id}</code>" in page.text
        rows = re.findall(r'<tr data-span="([0-9a-f]+)" data-service="([^"]+)"', page.text)
        assert {service for _, service in rows} >= MESH, f"services on the page: {sorted({s for _, s in rows})}"
        assert {span for span, _ in rows} >= {span["spanID"] for span in trace["spans"]}
        assert rows[0][1] == "fte-gateway"  # the webhook request, first and not indented
        assert '<td class="span depth-0">' in page.text
        assert "<summary>twilio " in page.text  # the provider call, its attributes one click away
        assert f"<dt>fte.correlation_id</dt><dd>{correlation_id}</dd>" in page.text
        assert '<svg class="bar"' in page.text
        assert missing.status_code == 404
        assert "no trace 00000000000000000000000000000000" in missing.text
