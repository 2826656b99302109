"""A real notifier process killed (SIGKILL) in the middle of a batch, some messages accepted by
the provider but not yet recorded; a new process finishes the batch: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from fte.common.v1 import common_pb2
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime.grpc_client import connect
from fte_stack.fakes.gmail import FakeGmail
from fte_stack.fakes.twilio import FakeTwilio
from fte_stack.procs import free_port, wait_for_port
from fte_stack.services import GRANTS
from notifier_helpers import email_request, whatsapp_request  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow

SENT = common_pb2.DELIVERY_STATUS_SENT


def _env(dsn: str, port: int, gmail: FakeGmail, twilio: FakeTwilio, tokens: dict[str, str]) -> dict[str, str]:
    grants = {tok: {"principal": p, "scopes": list(GRANTS[p])} for p, tok in tokens.items()}
    return {
        **os.environ,
        "FTE_NOTIFIER_GRPC_PORT": str(port),
        "FTE_NOTIFIER_AUTH_TOKENS": json.dumps(grants),
        "FTE_NOTIFIER_DATABASE_URL": dsn,
        "FTE_NOTIFIER_KAFKA_ENABLED": "false",
        "FTE_NOTIFIER_LEASE_SECONDS": "2",
        "FTE_NOTIFIER_DISPATCH_POLL_SECONDS": "0.1",
        "FTE_NOTIFIER_RETRY_BASE_SECONDS": "0.1",
        "FTE_NOTIFIER_LOG_JSON": "false",
        "FTE_NOTIFIER_GMAIL_ACCESS_TOKEN": "fake-gmail-access-token",
        "FTE_NOTIFIER_GMAIL_API_ENDPOINT": gmail.url,
        "FTE_NOTIFIER_TWILIO_ACCOUNT_SID": twilio.account_sid,
        "FTE_NOTIFIER_TWILIO_AUTH_TOKEN": twilio.auth_token,
        "FTE_NOTIFIER_TWILIO_API_BASE_URL": twilio.url,
    }


async def _start(env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fte_notifier", "serve", env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    await wait_for_port(port, 30, "notifier", proc)
    return proc


async def _statuses(dsn: str) -> Counter[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM notifier.deliveries GROUP BY status")
    finally:
        await conn.close()
    return Counter({r["status"]: r["n"] for r in rows})


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(
    new_database: Callable[[], Awaitable[str]],
    tokens: dict[str, str],
    fake_gmail: FakeGmail,
    fake_twilio: FakeTwilio,
    tmp_path: Path,
) -> None:
    dsn = await new_database()
    port = free_port()
    env = _env(dsn, port, fake_gmail, fake_twilio, tokens)
    log = tmp_path / "notifier.log"
    # The first sends are accepted, then their answers are held: the process dies with those
    # messages at the provider but not recorded as sent.
    fake_twilio.stall_after_accept(8, seconds=6)

    single = [whatsapp_request(f"Crash test message {i}.", recipient=f"whatsapp:+1415555{2000 + i}") for i in range(60)]
    long_text = " ".join(f"Two-part message sentence {k} with some padding to make it long." for k in range(40))
    double = [
        whatsapp_request(f"{long_text} Variant {i}.", recipient=f"whatsapp:+1415555{3000 + i}") for i in range(15)
    ]
    mails = [email_request(f"Crash test email {i}.", subject=f"Crash {i}") for i in range(30)]
    requests = single + double + mails

    first = await _start(env, port, log)
    try:
        channel = connect(f"127.0.0.1:{port}", token=tokens["agent"], default_timeout=10)
        stub = notifier_service_pb2_grpc.NotifierServiceStub(channel)
        responses = await asyncio.gather(*(stub.SendMessage(r) for r in requests))
        await channel.close()
        assert all(r.delivery.status == common_pb2.DELIVERY_STATUS_QUEUED for r in responses)
        assert {r.delivery.part_count for r in responses[60:75]} == {2}

        async def mid_batch() -> bool:
            done = (await _statuses(dsn))[SENT]
            return len(fake_twilio.messages()) >= 8 and done >= 5

        await _until(mid_batch, 30, "the batch to be under way")
    finally:
        first.kill()
        await first.wait()
    before = await _statuses(dsn)
    assert before[SENT] < len(requests), "the crash came too late to test anything"
    fake_twilio.stall_after_accept(0, 0)

    second = await _start(env, port, log)
    try:

        async def all_sent() -> bool:
            return (await _statuses(dsn))[SENT] == len(requests)

        await _until(all_sent, 60, "every delivery to be sent after the restart")
    finally:
        second.terminate()
        await second.wait()

    # Nothing twice: one provider message per WhatsApp part and one email per delivery.
    sent = Counter((m.to, m.body) for m in fake_twilio.messages())
    assert len(fake_twilio.messages()) == 60 + 15 * 2
    assert max(sent.values()) == 1
    assert all(sent[(r.recipient, r.text_body)] == 1 for r in single)
    assert all(len([k for k in sent if k[0] == r.recipient]) == 2 for r in double)
    ids = [email.message_from_bytes(m.raw, policy=email.policy.default)["Message-ID"] for m in fake_gmail.sent()]
    assert len(ids) == 30
    assert len(set(ids)) == 30
    # The held messages were found at the provider instead of being sent again.
    output = log.read_text()
    assert output.count("in-flight part found at the provider") >= 8, output[-3000:]
