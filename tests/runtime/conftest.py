"""A small KnowledgeService servicer to exercise the runtime (auth, errors, deadlines) over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.context import remaining_seconds
from fte_runtime.errors import NotFound, Violations
from fte_runtime.grpc_client import connect
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration
from fte_runtime.settings import GrpcServerSettings, RateLimit, TokenGrant

TOKENS = {
    "reader-token": TokenGrant(principal="reader", scopes=["kb.read"]),
    "nobody-token": TokenGrant(principal="nobody", scopes=[]),
    # Three calls at once, then one a second.
    "script-token": TokenGrant(
        principal="script", scopes=["kb.read"], rate_limit=RateLimit(requests_per_minute=60, burst=3)
    ),
}


class RuntimeProbeServicer(knowledge_service_pb2_grpc.KnowledgeServiceServicer):
    """GetArticle's name selects a behaviour; `downstream` lets one server call another."""

    def __init__(self) -> None:
        self.downstream: str | None = None
        self.seen_remaining: list[float] = []

    async def GetArticle(
        self, request: knowledge_service_pb2.GetArticleRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> knowledge_service_pb2.GetArticleResponse:
        name = request.name
        if name == "articles/missing":
            raise NotFound("article 'missing' does not exist", reason="ARTICLE_NOT_FOUND")
        if name == "articles/crash":
            raise RuntimeError("connection string postgres://secret@db")
        if name == "articles/slow":
            await asyncio.sleep(2)
        if name == "articles/forward" and self.downstream:
            self.seen_remaining.append(remaining_seconds(99.0))
            async with connect(self.downstream, token="reader-token") as channel:
                stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
                return await stub.GetArticle(knowledge_service_pb2.GetArticleRequest(name="articles/leaf"))
        if name == "articles/leaf":
            self.seen_remaining.append(remaining_seconds(99.0))
        v = Violations()
        v.check(name.startswith("articles/"), "name", "must look like 'articles/{article}'")
        v.raise_if_any()
        return knowledge_service_pb2.GetArticleResponse(article=knowledge_pb2.Article(name=name, title="t"))


async def start_probe(settings: GrpcServerSettings) -> tuple[GrpcServer, RuntimeProbeServicer]:
    servicer = RuntimeProbeServicer()  # type: ignore[abstract]  # a probe: only GetArticle is needed
    server = GrpcServer(
        settings,
        "knowledge.fte",
        [
            ServiceRegistration(
                "fte.knowledge.v1.KnowledgeService",
                servicer,
                knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server,
                {"GetArticle": "kb.read"},
            )
        ],
    )
    await server.start()
    return server, servicer


@pytest_asyncio.fixture(loop_scope="session")
async def probe() -> AsyncIterator[tuple[GrpcServer, RuntimeProbeServicer]]:
    server, servicer = await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=TOKENS))
    yield server, servicer
    await server.stop()
