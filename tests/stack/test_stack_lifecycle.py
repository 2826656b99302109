"""The embedded stack starts, reports healthy, stops, and restarts with its data kept."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fte.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime import topics
from fte_runtime.grpc_client import connect
from fte_stack.stack import Stack, StackConfig, wait_grpc_healthy


async def test_infrastructure_starts_stops_and_keeps_data(stack_root: Path) -> None:
    tmp_path = stack_root / "lifecycle"
    config = StackConfig.for_tests(tmp_path / "stack", services=[])
    async with Stack(config) as stack:
        conn = await asyncpg.connect(stack.postgres.dsn())
        try:
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            assert set(topics.ALL) <= set(await admin.list_topics())
        finally:
            await admin.close()
        # Envoy is up (its admin answers LIVE); with no services behind it, calls get UNAVAILABLE.
        assert stack.envoy is not None
        async with httpx.AsyncClient() as http:
            ready = await http.get(f"http://127.0.0.1:{stack.envoy.admin_port}/ready", timeout=5)
        assert (ready.status_code, ready.text.strip()) == (200, "LIVE")
        async with grpc.aio.insecure_channel(stack.envoy.target) as channel:
            stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetArticle(knowledge_service_pb2.GetArticleRequest(name="articles/x"), timeout=5)
            assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED)
        tokens = json.loads((tmp_path / "stack" / "tokens.json").read_text())

    # Second start: same data folder, same tokens.
    async with Stack(config) as stack:
        conn = await asyncpg.connect(stack.postgres.dsn())
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "still here"
        finally:
            await conn.close()
        assert json.loads((tmp_path / "stack" / "tokens.json").read_text()) == tokens
    assert not (tmp_path / "stack" / "postgres" / "postmaster.pid").exists()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_every_process_that_dies_is_started_again(stack_root: Path) -> None:
    config = StackConfig.for_tests(stack_root / "supervised" / "stack", services=["identity"], local_providers=False)
    async with Stack(config) as stack:
        conn = await asyncpg.connect(stack.postgres.dsn())
        try:
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()
        identity, envoy, broker = stack.children["identity"], stack.envoy, stack.broker
        assert envoy is not None
        assert broker is not None
        assert identity.proc is not None
        assert envoy.child.proc is not None
        first_pids = (identity.proc.pid, envoy.child.proc.pid)
        identity.kill()
        envoy.child.kill()
        broker.child.kill()
        postmaster = int((stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)

        async def serving() -> bool:
            try:
                await wait_grpc_healthy(f"127.0.0.1:{stack.ports['identity']}", 1, "identity")
                async with httpx.AsyncClient() as http:
                    ready = await http.get(f"http://127.0.0.1:{envoy.admin_port}/ready", timeout=1)
                admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, request_timeout_ms=1000)
                await admin.start()
                try:
                    # The embedded broker comes back empty; its topics are made again.
                    topics_back = set(topics.ALL) <= set(await admin.list_topics())
                finally:
                    await admin.close()
                conn = await asyncpg.connect(stack.postgres.dsn(), timeout=1)
                try:
                    kept = await conn.fetchval("SELECT v FROM kept") == "still here"
                finally:
                    await conn.close()
                return ready.status_code == 200 and topics_back and kept
            except (OSError, RuntimeError, TimeoutError, asyncpg.PostgresError, httpx.HTTPError, KafkaError):
                return False

        await _until(serving, "identity, Envoy and PostgreSQL to be back")
        # Each was restarted; some more than once (identity cannot start while PostgreSQL is
        # still down, and that counts as another death in a row).
        restarts = stack.supervisor.restarts()
        assert set(restarts) == {"postgres", "tansu", "envoy", "identity"}
        assert min(restarts.values()) >= 1
        identity = stack.children["identity"]
        assert identity.proc is not None
        assert envoy.child.proc is not None
        assert (identity.proc.pid, envoy.child.proc.pid) != first_pids
        # Through Envoy, with the restarted identity service behind it: the call reaches it.
        channel = connect(envoy.target, token=stack.tokens["agent"], default_timeout=5)
        try:
            stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetCustomer(identity_service_pb2.GetCustomerRequest(name=f"customers/{uuid.uuid4()}"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await channel.close()
