"""The embedded stack starts, reports healthy, stops, and restarts with its data kept."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import grpc
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fte.knowledge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime import topics
from fte_stack.stack import Stack, StackConfig


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
