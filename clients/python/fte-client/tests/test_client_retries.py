"""Retries are the channel's (gRPC service config): an idempotent call that meets UNAVAILABLE is
sent again, a mutation never is. A real server over TCP that fails on purpose."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_client import v1
from fte_client.v1.channel import idempotent_methods
from fte_runtime.errors import Unavailable
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration
from fte_runtime.settings import GrpcServerSettings, TokenGrant

TOKEN = "retry-token"


class FlakyKnowledge(knowledge_service_pb2_grpc.KnowledgeServiceServicer):
    """Fails the first two calls of each method with UNAVAILABLE."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def _flaky(self, method: str) -> None:
        self.calls[method] += 1
        if self.calls[method] <= 2:
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


@pytest_asyncio.fixture(loop_scope="session")
async def flaky() -> AsyncIterator[tuple[str, FlakyKnowledge]]:
    servicer = FlakyKnowledge()  # type: ignore[abstract]  # only the two methods under test
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
    yield f"127.0.0.1:{server.port}", servicer
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
