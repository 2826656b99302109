"""Retries are the channel's (gRPC service config): an idempotent call that meets UNAVAILABLE is
sent again, a mutation never is. A real server over TCP that fails on purpose, directly and
through the real Envoy, which adds no attempts of its own to a call a service answered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_client import v1
from fte_client.v1.channel import idempotent_methods
from fte_runtime.errors import Unavailable
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration
from fte_runtime.settings import GrpcServerSettings, TokenGrant
from fte_stack.envoy import EnvoyProxy
from fte_stack.procs import free_port

TOKEN = "retry-token"


class FlakyKnowledge(knowledge_service_pb2_grpc.KnowledgeServiceServicer):
    """Fails the first `failures` calls of each method with UNAVAILABLE."""

    def __init__(self, failures: int = 2) -> None:
        self.calls: Counter[str] = Counter()
        self.failures = failures

    def _flaky(self, method: str) -> None:
        self.calls[method] += 1
        if self.calls[method] <= self.failures:
            raise Unavailable("warming up")

    async def GetArticle(
        self, request: knowledge_service_pb2.GetArticleRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> knowledge_service_pb2.GetArticleResponse:
        self._flaky("GetArticle")
        return knowledge_service_pb2.GetArticleResponse(article=knowledge_pb2.Article(name=request.name))

    async def DeleteArticle(
        self, request: knowledge_service_pb2.DeleteArticleRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> knowledge_service_pb2.DeleteArticleResponse:
        self._flaky("DeleteArticle")
        return knowledge_service_pb2.DeleteArticleResponse()


async def start_flaky(servicer: FlakyKnowledge) -> GrpcServer:
    server = GrpcServer(
        GrpcServerSettings(grpc_port=0, auth_tokens={TOKEN: TokenGrant(principal="t", scopes=["kb.read", "kb.write"])}),
        "knowledge.fte",
        [
            ServiceRegistration(
                "fte.knowledge.v1.KnowledgeService",
                servicer,
                knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server,
                {"GetArticle": "kb.read", "DeleteArticle": "kb.write"},
            )
        ],
    )
    await server.start()
    return server


@pytest_asyncio.fixture(loop_scope="session")
async def flaky() -> AsyncIterator[tuple[str, FlakyKnowledge]]:
    servicer = FlakyKnowledge()  # type: ignore[abstract]  # only the two methods under test
    server = await start_flaky(servicer)
    yield f"127.0.0.1:{server.port}", servicer
    await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def down_behind_envoy(tmp_path: Path) -> AsyncIterator[tuple[str, FlakyKnowledge]]:
    """Envoy (deploy/envoy/envoy.yaml) in front of a service answering UNAVAILABLE to everything."""
    servicer = FlakyKnowledge(failures=10**9)  # type: ignore[abstract]
    server = await start_flaky(servicer)
    envoy = EnvoyProxy(free_port(), free_port(), {"knowledge": server.port}, tmp_path)
    await envoy.start()
    try:
        # Envoy routes once its first active health check of the service has passed.
        async with v1.connect(envoy.target, token=TOKEN, retries=False) as client, asyncio.timeout(30):
            while True:
                try:
                    await client.knowledge.GetArticle(knowledge_service_pb2.GetArticleRequest(name="articles/a"))
                except v1.UnavailableError as err:
                    if err.reason == "UNAVAILABLE" and err.domain == "knowledge.fte":
                        break  # the service's own answer
                await asyncio.sleep(0.1)
        servicer.calls.clear()
        yield envoy.target, servicer
    finally:
        await envoy.stop()
        await server.stop()


async def test_an_idempotent_call_is_retried_on_unavailable(flaky: tuple[str, FlakyKnowledge]) -> None:
    target, servicer = flaky
    async with v1.connect(target, token=TOKEN) as client:
        reply = await client.knowledge.GetArticle(knowledge_service_pb2.GetArticleRequest(name="articles/a"))
    assert reply.article.name == "articles/a"
    assert servicer.calls["GetArticle"] == 3


async def test_a_mutation_is_never_retried(flaky: tuple[str, FlakyKnowledge]) -> None:
    target, servicer = flaky
    async with v1.connect(target, token=TOKEN) as client:
        with pytest.raises(v1.UnavailableError) as caught:
            await client.knowledge.DeleteArticle(knowledge_service_pb2.DeleteArticleRequest(name="articles/a"))
    assert caught.value.reason == "UNAVAILABLE"
    assert servicer.calls["DeleteArticle"] == 1


async def test_without_retries_the_first_failure_is_raised(flaky: tuple[str, FlakyKnowledge]) -> None:
    target, servicer = flaky
    servicer.calls.clear()
    async with v1.connect(target, token=TOKEN, retries=False) as client:
        with pytest.raises(v1.UnavailableError):
            await client.knowledge.GetArticle(knowledge_service_pb2.GetArticleRequest(name="articles/a"))
    assert servicer.calls["GetArticle"] == 1


def test_only_reads_are_retried() -> None:
    methods = {f"{s.rsplit('.', 1)[-1]}/{m}" for s, m in idempotent_methods()}
    assert {"KnowledgeService/SearchKnowledge", "IdentityService/GetCustomer", "AgentService/ListTickets"} <= methods
    assert not {m for m in methods if m.split("/")[1].startswith(("Create", "Update", "Delete", "Reply", "Merge"))}


async def test_through_envoy_only_the_client_retries_what_a_service_answered(
    down_behind_envoy: tuple[str, FlakyKnowledge],
) -> None:
    # Envoy retries only what never reached a service (connect failures, refused streams): each
    # layer retries its own kind of failure, so attempts do not multiply (3, not 3 x 3).
    target, servicer = down_behind_envoy
    async with v1.connect(target, token=TOKEN) as client:
        with pytest.raises(v1.UnavailableError):
            await client.knowledge.GetArticle(knowledge_service_pb2.GetArticleRequest(name="articles/a"))
        assert servicer.calls["GetArticle"] == 3
        # A mutation answered UNAVAILABLE reached the service once: nobody sends it again.
        with pytest.raises(v1.UnavailableError):
            await client.knowledge.DeleteArticle(knowledge_service_pb2.DeleteArticleRequest(name="articles/a"))
        assert servicer.calls["DeleteArticle"] == 1
