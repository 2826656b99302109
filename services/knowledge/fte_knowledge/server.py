"""The knowledge service: its knowledge base (pool, embedder, index), KnowledgeService and the
background re-embedder."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte_runtime import db, service
from fte_runtime.db import create_pool
from fte_runtime.embeddings import Embedder, LocalMiniLM, OpenAIEmbedder

from fte_knowledge.crosslingual import CrossLingual
from fte_knowledge.reembed import run_reembedder
from fte_knowledge.service import KnowledgeBase
from fte_knowledge.servicer import KnowledgeServicer
from fte_knowledge.settings import KnowledgeSettings
from fte_knowledge.store import SCHEMA, Store

log = logging.getLogger("fte.knowledge")

SERVICE_NAME = "fte.knowledge.v1.KnowledgeService"
SCOPES = {
    "SearchKnowledge": "kb.read",
    "GetArticle": "kb.read",
    "ListArticles": "kb.read",
    "ListKnowledgeGaps": "kb.read",
    "CreateArticle": "kb.write",
    "UpdateArticle": "kb.write",
    "DeleteArticle": "kb.write",
    "BatchImportArticles": "kb.write",
    "RecordKnowledgeGap": "kb.gaps.write",
}


async def migrate(settings: KnowledgeSettings) -> list[str]:
    return await db.migrate(settings, SCHEMA, "fte_knowledge")


def build_embedder(settings: KnowledgeSettings) -> Embedder:
    if settings.embedding_provider == "openai":
        return OpenAIEmbedder(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value(),
            model=settings.openai_model,
            dimension=settings.openai_dimension,
            timeout_seconds=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
            batch_size=settings.embedding_batch_size,
            send_dimensions=settings.openai_send_dimensions,
        )
    return LocalMiniLM(threads=settings.embedding_threads)


async def open_knowledge_base(
    settings: KnowledgeSettings, application_name: str, embedder: Embedder | None = None
) -> KnowledgeBase:
    """Migrated schema, pool, embedder (built from settings unless given) and the current
    model's HNSW index."""
    await migrate(settings)
    pool: asyncpg.Pool = await create_pool(
        settings,
        SCHEMA,
        application_name=application_name,
        vector=True,
        reset_on_release=False,
        # Relaxed iterative scans keep filtered vector queries from coming back short (pgvector >= 0.8).
        session_settings={"hnsw.ef_search": str(settings.hnsw_ef_search), "hnsw.iterative_scan": "relaxed_order"},
    )
    try:
        if embedder is None:
            embedder = await asyncio.to_thread(build_embedder, settings)
        cross = await asyncio.to_thread(CrossLingual) if settings.crosslingual else None
        kb = KnowledgeBase(Store(pool), embedder, settings, cross)
        await kb.store.ensure_index(kb.model)
        if kb.cross_model is not None:
            await kb.store.ensure_index(kb.cross_model)
    except BaseException:
        await pool.close()
        raise
    return kb


async def close_knowledge_base(kb: KnowledgeBase) -> None:
    await kb.embedder.close()
    await kb.store.pool.close()


class Knowledge(service.Service[KnowledgeSettings]):
    """The whole service. `serve()` runs it until SIGTERM; tests use `start()` / `stop()`."""

    name = "knowledge"
    domain = "knowledge.fte"

    def __init__(self, settings: KnowledgeSettings, embedder: Embedder | None = None) -> None:
        super().__init__(settings)
        self._embedder = embedder

    async def open(self) -> None:
        self.kb = await self.resource(
            open_knowledge_base(self.settings, "fte-knowledge", self._embedder), close_knowledge_base
        )
        self.keep_quotas(self.kb.store.pool)
        self.register(
            SERVICE_NAME,
            KnowledgeServicer(self.kb),
            knowledge_service_pb2_grpc.add_KnowledgeServiceServicer_to_server,
            SCOPES,
        )
        self.background("re-embedder", lambda: run_reembedder(self.kb))
        self.background("vocabulary", lambda: refresh_vocabulary_every(self.kb))


async def refresh_vocabulary_every(kb: KnowledgeBase) -> None:
    """Picks up articles written by other replicas or the importer, and new planner statistics."""
    while True:
        await asyncio.sleep(kb.settings.vocabulary_refresh_seconds)
        await kb.refresh_vocabulary()


async def serve(settings: KnowledgeSettings) -> None:
    await Knowledge(settings).serve()
