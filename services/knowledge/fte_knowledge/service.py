"""What the knowledge base does, independent of gRPC: write articles with their chunks and
vectors, import in bulk, and answer hybrid searches."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import asyncpg
from fte_runtime.embeddings import Embedder, Vector
from fte_runtime.errors import Aborted, AlreadyExists, NotFound

from fte_knowledge.articles import ArticleFields, StoredArticle
from fte_knowledge.chunking import Chunk, chunk_article
from fte_knowledge.gaps import GapStore, Group, NewGap, StoredGap
from fte_knowledge.metrics import ARTICLES_WRITTEN, GAPS_RECORDED, SEARCHES
from fte_knowledge.settings import KnowledgeSettings
from fte_knowledge.store import Filters, Hit, Store, VectorModel

log = logging.getLogger("fte.knowledge")

# Candidates kept per gap, and listed per group of gaps.
MAX_GAP_CANDIDATES = 10
# Metric labels of the KnowledgeGap.Outcome values.
_GAP_OUTCOMES = {1: "low_confidence", 2: "no_answer_found"}

# How often search re-reads which words are too common to rank by.
_COMMON_REFRESH_SECONDS = 300.0


class Outcome(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class SearchHit:
    hit: Hit
    score: float


@dataclass(frozen=True, slots=True)
class Prepared:
    """An article's chunks and their vectors, computed before the transaction that stores them."""

    chunks: list[Chunk]
    vectors: list[Vector]


class KnowledgeBase:
    def __init__(self, store: Store, embedder: Embedder, settings: KnowledgeSettings) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.model = VectorModel(embedder.model, embedder.dimension)
        self.gaps = GapStore(store.pool)
        self._common_refresh_at = 0.0

    async def prepare(self, articles: Sequence[ArticleFields]) -> list[Prepared]:
        """Chunks every article and embeds all chunks in one batched call."""
        size, overlap = self.settings.chunk_max_chars, self.settings.chunk_overlap_chars
        per_article = [chunk_article(a.title, a.body, max_chars=size, overlap_chars=overlap) for a in articles]
        vectors = await self.embedder.embed([c.text for chunks in per_article for c in chunks])
        out: list[Prepared] = []
        offset = 0
        for chunks in per_article:
            out.append(Prepared(chunks, vectors[offset : offset + len(chunks)]))
            offset += len(chunks)
        return out

    async def _write_chunks(self, conn: asyncpg.Connection, fields: ArticleFields, prepared: Prepared) -> None:
        await self.store.replace_chunks(
            conn,
            fields.slug,
            language=fields.language,
            chunks=prepared.chunks,
            vectors=prepared.vectors,
            model=self.model,
        )

    # -- CRUD --------------------------------------------------------------------------------

    async def create(self, fields: ArticleFields, request_id: str | None = None) -> StoredArticle:
        if request_id:
            earlier = await self.store.get_by_request_id(request_id)
            if earlier is not None:
                if earlier.fields.slug != fields.slug:
                    raise AlreadyExists("request_id was already used for another article", reason="REQUEST_ID_REUSED")
                return earlier
        if await self.store.get(fields.slug) is not None:
            raise AlreadyExists(f"article {fields.slug!r} already exists", reason="ARTICLE_EXISTS")
        (prepared,) = await self.prepare([fields])
        try:
            async with self.store.pool.acquire() as conn, conn.transaction():
                stored = await self.store.insert(conn, fields, request_id=request_id)
                await self._write_chunks(conn, fields, prepared)
        except asyncpg.UniqueViolationError as exc:
            # Lost a race with another create of the same slug (or request id).
            if request_id and (earlier := await self.store.get_by_request_id(request_id)) is not None:
                return earlier
            raise AlreadyExists(f"article {fields.slug!r} already exists", reason="ARTICLE_EXISTS") from exc
        ARTICLES_WRITTEN.labels("created").inc()
        return stored

    async def get(self, slug: str) -> StoredArticle:
        article = await self.store.get(slug)
        if article is None:
            raise NotFound(f"article {slug!r} does not exist", reason="ARTICLE_NOT_FOUND")
        return article

    async def update(self, current: StoredArticle, new: ArticleFields) -> StoredArticle:
        """Writes `new` over `current` if nobody changed the article since `current` was read."""
        if new.content_hash() == current.content_hash:
            return current
        prepared = None if new.same_text(current.fields) else (await self.prepare([new]))[0]
        async with self.store.pool.acquire() as conn, conn.transaction():
            locked = await self.store.get(current.fields.slug, conn, lock=True)
            if locked is None:
                raise NotFound(f"article {current.fields.slug!r} does not exist", reason="ARTICLE_NOT_FOUND")
            if locked.etag != current.etag:
                raise Aborted(
                    "the article changed since it was read; get it again and re-apply the change",
                    reason="ETAG_MISMATCH",
                    metadata={"current_etag": locked.etag},
                )
            stored = await self.store.update(conn, new)
            if prepared is not None:
                await self._write_chunks(conn, new, prepared)
        ARTICLES_WRITTEN.labels("updated").inc()
        return stored

    async def delete(self, slug: str, etag: str) -> None:
        async with self.store.pool.acquire() as conn, conn.transaction():
            locked = await self.store.get(slug, conn, lock=True)
            if locked is None:
                raise NotFound(f"article {slug!r} does not exist", reason="ARTICLE_NOT_FOUND")
            if etag and etag != locked.etag:
                raise Aborted(
                    "the article changed since it was read; get it again before deleting",
                    reason="ETAG_MISMATCH",
                    metadata={"current_etag": locked.etag},
                )
            await self.store.delete(conn, slug)
        ARTICLES_WRITTEN.labels("deleted").inc()

    # -- import ------------------------------------------------------------------------------

    async def import_articles(self, articles: Sequence[ArticleFields]) -> list[tuple[StoredArticle | None, Outcome]]:
        """Creates or updates each article by slug; unchanged content (same hash) is skipped.
        Each article is written in its own transaction."""
        hashes = await self.store.get_hashes([a.slug for a in articles])
        changed = [a for a in articles if hashes.get(a.slug) != a.content_hash()]
        prepared = dict(zip([a.slug for a in changed], await self.prepare(changed), strict=True))
        results: list[tuple[StoredArticle | None, Outcome]] = []
        for fields in articles:
            if fields.slug not in prepared:
                results.append((None, Outcome.UNCHANGED))
                continue
            async with self.store.pool.acquire() as conn, conn.transaction():
                existing = await self.store.get(fields.slug, conn, lock=True)
                if existing is not None and existing.content_hash == fields.content_hash():
                    results.append((existing, Outcome.UNCHANGED))
                    continue
                if existing is None:
                    stored = await self.store.insert(conn, fields)
                    outcome = Outcome.CREATED
                else:
                    stored = await self.store.update(conn, fields)
                    outcome = Outcome.UPDATED
                await self._write_chunks(conn, fields, prepared[fields.slug])
            ARTICLES_WRITTEN.labels(outcome.value).inc()
            results.append((stored, outcome))
        return results

    # -- search ------------------------------------------------------------------------------

    async def search(
        self, query: str, *, top_k: int, min_score: float, filters: Filters, per_article: int
    ) -> list[SearchHit]:
        """Hybrid search: vector and full-text candidates fused by reciprocal rank, in one
        statement (see `Store.hybrid_sql`)."""
        if time.monotonic() >= self._common_refresh_at:
            self._common_refresh_at = time.monotonic() + _COMMON_REFRESH_SECONDS
            await self.store.refresh_common_lexemes(self.settings.search_common_word_fraction)
        (vector,) = await self.embedder.embed([query])
        hits = await self.store.search_hybrid(
            query,
            vector,
            self.model,
            filters,
            candidates=max(self.settings.search_candidates, top_k * per_article * 3),
            rrf_k=self.settings.rrf_k,
            top_k=top_k,
            per_article=per_article,
            min_score=min_score,
        )
        SEARCHES.inc()
        return [SearchHit(hit, score) for hit, score in hits]

    # -- knowledge gaps ----------------------------------------------------------------------

    async def record_gap(self, gap: NewGap, request_id: str | None = None) -> tuple[StoredGap, bool]:
        """Stores a question that was answered poorly or not at all, in the group of similar
        questions (see `gaps`); (gap, duplicate). A request id used before returns the first gap,
        or ALREADY_EXISTS when it came with another question."""
        if request_id is not None and (earlier := await self.gaps.get_by_request_id(request_id)) is not None:
            return self._same_request(earlier, gap), True
        (vector,) = await self.embedder.embed([gap.question])
        stored, duplicate = await self.gaps.record(
            gap,
            vector,
            self.model,
            threshold=self.settings.gap_group_similarity,
            request_id=request_id,
            retention_days=self.settings.gap_retention_days,
        )
        if duplicate:
            return self._same_request(stored, gap), True
        GAPS_RECORDED.labels(_GAP_OUTCOMES.get(gap.outcome, "unknown")).inc()
        # Never the question itself: it is customer text.
        log.info("knowledge gap recorded", extra={"gap": stored.id, "group": stored.group_id})
        return stored, False

    @staticmethod
    def _same_request(earlier: StoredGap, gap: NewGap) -> StoredGap:
        if earlier.question != gap.question or earlier.outcome != gap.outcome:
            raise AlreadyExists("request_id was already used for another question", reason="REQUEST_ID_REUSED")
        return earlier

    async def list_gap_groups(
        self, *, after: tuple[datetime, int] | None, limit: int, gaps_per_group: int
    ) -> tuple[list[Group], int]:
        return await self.gaps.list_groups(
            after=after, limit=limit, gaps_per_group=gaps_per_group, candidates_per_group=MAX_GAP_CANDIDATES
        )
