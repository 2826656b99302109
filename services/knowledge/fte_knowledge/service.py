"""What the knowledge base does, independent of gRPC: write articles with their chunks and
vectors, import in bulk, and answer hybrid searches."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import asyncpg
import numpy as np
from fte_runtime.embeddings import Embedder, Vector
from fte_runtime.errors import Aborted, AlreadyExists, NotFound

from fte_knowledge.articles import ArticleFields, StoredArticle
from fte_knowledge.chunking import Chunk, chunk_article
from fte_knowledge.crosslingual import CrossLingual
from fte_knowledge.gaps import GapStore, Group, NewGap, StoredGap
from fte_knowledge.material import MaterialCache
from fte_knowledge.metrics import ARTICLES_WRITTEN, DEEP_PASSES, GAPS_RECORDED, SEARCHES
from fte_knowledge.query import Understood, understand, vocabulary
from fte_knowledge.rerank import Candidate, Ranked, Section, Weights, rerank
from fte_knowledge.settings import KnowledgeSettings
from fte_knowledge.store import Filters, Hit, Store, VectorModel

log = logging.getLogger("fte.knowledge")

# Candidates kept per gap, and listed per group of gaps.
MAX_GAP_CANDIDATES = 10
# Metric labels of the KnowledgeGap.Outcome values.
_GAP_OUTCOMES = {1: "low_confidence", 2: "no_answer_found"}


class Outcome(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class SearchHit:
    hit: Hit
    score: float
    # The section of the article that answers the question (the whole section, steps whole),
    # how similar it is to the question, and how much of the question the article answers.
    section: Section | None = None
    section_similarity: float = 0.0
    coverage: float = 1.0
    cross_lingual: bool = False


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    hits: list[SearchHit]
    query: Understood


@dataclass(frozen=True, slots=True)
class Prepared:
    """An article's chunks and their vectors, computed before the transaction that stores them."""

    chunks: list[Chunk]
    vectors: list[Vector]


class KnowledgeBase:
    def __init__(
        self, store: Store, embedder: Embedder, settings: KnowledgeSettings, cross: CrossLingual | None = None
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.model = VectorModel(embedder.model, embedder.dimension)
        self.gaps = GapStore(store.pool)
        self.cross = cross
        self.cross_model = VectorModel(cross.model, cross.dimension) if cross else None
        self.weights = Weights(fused=settings.rerank_fused_weight)
        self.material = MaterialCache(store, self.model, self.cross_model, settings.rerank_cache_articles)
        self.vocabulary: frozenset[str] = frozenset()
        # Read before the first search and again after each write here; `refresh_vocabulary`
        # also runs as a background job for writes elsewhere and new planner statistics.
        self._vocabulary_stale = True

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
        self._vocabulary_stale = True
        return stored

    async def get(self, slug: str) -> StoredArticle:
        article = await self.store.get(slug)
        if article is None:
            raise NotFound(f"article {slug!r} does not exist", reason="ARTICLE_NOT_FOUND")
        return article

    async def list_articles(
        self, *, after_slug: str | None, limit: int, category: str, language: str, tag: str
    ) -> tuple[list[StoredArticle], int]:
        """Up to `limit` articles after `after_slug` in slug order, and how many match the filters
        (an empty filter matches every article)."""
        return await self.store.list_articles(
            after_slug=after_slug, limit=limit, category=category, language=language, tag=tag
        )

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
        self._vocabulary_stale = True
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
        self._vocabulary_stale = True

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
            self._vocabulary_stale = True
            results.append((stored, outcome))
        return results

    # -- search ------------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        top_k: int,
        min_score: float,
        filters: Filters,
        per_article: int,
        query_language: str = "",
        given: Mapping[str, Vector] | None = None,
    ) -> SearchOutcome:
        """Query understanding, then the hybrid statement (vector and full-text candidates fused
        by reciprocal rank, see `Store.hybrid_sql`) for up to `rerank_candidates` articles, then
        the second stage (see `rerank`): the articles re-ranked on question-vs-section
        similarity, each with the section that answers; an English question whose best two
        articles come out close is re-ranked again with the multilingual model too. `given`
        holds the caller's unit vectors of `query` by model name (see `query_models`); one of
        ours is used, not computed again."""
        if self._vocabulary_stale:
            await self.refresh_vocabulary()
        understood = understand(query, language=query_language, kb_words=self.vocabulary)
        second_stage = self.settings.rerank
        parts = list(understood.parts) if second_stage and len(understood.parts) > 1 else []
        given = given or {}
        question = given.get(self.model.name)
        to_embed = [understood.text] if question is None else []
        cross = self.cross if second_stage and understood.language != "en" else None
        cross_question = given.get(cross.query_model) if cross is not None else None
        if cross is not None and cross_question is None:
            vectors, cross_question = await asyncio.gather(self._embed(to_embed, parts), cross.query(understood.text))
        else:
            vectors = await self._embed(to_embed, parts)
        if question is not None:
            vectors.insert(0, question)
        if not second_stage:
            first = await self.store.search_hybrid(
                understood.text,
                vectors[0],
                self.model,
                filters,
                candidates=max(self.settings.search_candidates, top_k * per_article * 3),
                rrf_k=self.settings.rrf_k,
                top_k=top_k,
                per_article=per_article,
                min_score=min_score,
                extra_words=understood.extra_words,
                language=understood.language,
            )
            SEARCHES.inc()
            return SearchOutcome([SearchHit(hit, score) for hit, score in first], understood)
        pool = max(top_k, self.settings.rerank_candidates)
        hits = await self.store.search_hybrid(
            understood.text,
            vectors[0],
            self.model,
            filters,
            candidates=max(self.settings.search_candidates, pool * per_article * 3),
            rrf_k=self.settings.rrf_k,
            top_k=pool * per_article,
            per_article=per_article,
            min_score=0.0,
            extra_words=understood.extra_words,
            language=understood.language,
        )
        by_article: dict[str, list[tuple[Hit, float]]] = {}
        for hit, score in hits:
            by_article.setdefault(hit.slug, []).append((hit, score))
        if cross_question is not None and self.cross_model is not None:
            for hit in await self.store.search_vector(cross_question, self.cross_model, filters, pool * 3):
                if len(by_article) >= pool * 2:
                    break
                by_article.setdefault(hit.slug, [(hit, 0.0)])
        if not by_article:
            SEARCHES.inc()
            return SearchOutcome([], understood)
        candidates = await self._candidates(by_article, with_cross=cross_question is not None)
        ranking = functools.partial(
            rerank,
            question=vectors[0],
            language=understood.language,
            exact=understood.exact,
            question_text=understood.text,
            parts=np.stack(vectors[1:]) if parts else None,
            cross_question=cross_question,
            weights=self.weights,
        )
        ranked = ranking(candidates)
        if self.cross is not None and cross_question is None and self._ambiguous(ranked):
            # Too close to call on MiniLM alone: ask the multilingual model too. Its passage
            # vectors are stored (until the background task has made them all, this is skipped);
            # only the question is embedded, unless the caller sent its vector.
            deep_candidates = await self._candidates(by_article, with_cross=True)
            if all(c.cross_vectors is not None for c in deep_candidates):
                deep_question = given.get(self.cross.query_model)
                if deep_question is None:
                    deep_question = await self.cross.query(understood.text)
                ranked = ranking(deep_candidates, deep_question=deep_question)
                DEEP_PASSES.inc()
        out: list[SearchHit] = []
        for r in ranked:
            if r.score < min_score or len({h.hit.slug for h in out}) >= top_k:
                continue
            for hit, _ in by_article[r.slug]:
                out.append(SearchHit(hit, r.score, r.section, r.similarity, r.coverage, r.cross_lingual))
        SEARCHES.inc()
        return SearchOutcome(out, understood)

    def _ambiguous(self, ranked: Sequence[Ranked]) -> bool:
        """Whether the best two articles scored within `rerank_deep_margin` of each other."""
        margin = self.settings.rerank_deep_margin
        return margin > 0 and self.weights.deep > 0 and len(ranked) > 1 and ranked[0].score - ranked[1].score < margin

    async def refresh_vocabulary(self) -> None:
        """Re-reads the knowledge base's own words (titles, headings, tags: what queries are
        expanded with) and the lexemes too common to rank by."""
        self._vocabulary_stale = False
        try:
            await self.store.refresh_common_lexemes(self.settings.search_common_word_fraction)
            self.vocabulary = vocabulary(await self.store.vocabulary_texts())
        except BaseException:
            self._vocabulary_stale = True
            raise

    def query_models(self) -> dict[str, int]:
        """The models whose query vectors `search` uses, with their dimensions."""
        models = {self.model.name: self.model.dimension}
        if self.cross is not None:
            models[self.cross.query_model] = self.cross.dimension
        return models

    async def _embed(self, *groups: Sequence[str]) -> list[Vector]:
        texts = [t for group in groups for t in group]
        return await self.embedder.embed(texts) if texts else []

    async def _candidates(self, by_article: dict[str, list[tuple[Hit, float]]], *, with_cross: bool) -> list[Candidate]:
        hashes = {slug: hits[0][0].content_hash for slug, hits in by_article.items()}
        material = await self.material.get(hashes, with_cross=with_cross)
        return [
            Candidate(
                slug=slug,
                title=m.title,
                language=m.language,
                fused=max(score for _, score in by_article[slug]),
                sections=m.sections,
                chunk_sections=m.chunk_sections,
                vectors=m.vectors,
                cross_vectors=m.cross_vectors if with_cross else None,
            )
            for slug, m in material.items()
        ]

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
