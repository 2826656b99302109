"""KnowledgeService over gRPC: request validation and proto mapping around `KnowledgeBase`."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
from fte.common.v1 import common_pb2
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.embeddings import Vector
from fte_runtime.errors import Aborted, InvalidArgument, Violations
from fte_runtime.logs import redact
from fte_runtime.names import make_name, parse_name
from fte_runtime.pagination import Page, page_size
from google.protobuf.timestamp_pb2 import Timestamp

from fte_knowledge.articles import COLLECTION, LANGUAGE, UPDATABLE, check_fields, from_proto, merge, to_proto
from fte_knowledge.gaps import Candidate, NewGap, StoredGap, top_candidates
from fte_knowledge.service import MAX_GAP_CANDIDATES, KnowledgeBase, Outcome
from fte_knowledge.store import Filters

MAX_QUERY_CHARS = 2000
MAX_TOP_K = 20
DEFAULT_TOP_K = 5
MAX_CHUNKS_PER_ARTICLE = 5
MAX_BATCH = 500
MAX_FILTER_VALUES = 20
MAX_REQUEST_ID = 200
MAX_QUERY_EMBEDDINGS = 4
GAP_COLLECTION = "knowledgeGaps"
DEFAULT_GAPS_PER_GROUP = 10
MAX_GAPS_PER_GROUP = 100
_GAP_OUTCOMES = {knowledge_pb2.KnowledgeGap.OUTCOME_LOW_CONFIDENCE, knowledge_pb2.KnowledgeGap.OUTCOME_NO_ANSWER_FOUND}

_OUTCOMES = {
    Outcome.CREATED: knowledge_service_pb2.ImportResult.OUTCOME_CREATED,
    Outcome.UPDATED: knowledge_service_pb2.ImportResult.OUTCOME_UPDATED,
    Outcome.UNCHANGED: knowledge_service_pb2.ImportResult.OUTCOME_UNCHANGED,
}


class KnowledgeServicer(knowledge_service_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    async def CreateArticle(
        self, request: knowledge_service_pb2.CreateArticleRequest, context: Any
    ) -> knowledge_service_pb2.CreateArticleResponse:
        v = Violations()
        v.check(request.HasField("article"), "article", "is required")
        fields = from_proto(request.article)
        check_fields(fields, v)
        request_id = request.request_id.strip() or None
        if request_id is not None:
            try:
                request_id = str(uuid.UUID(request_id))
            except ValueError:
                v.add("request_id", "must be a UUID")
        v.raise_if_any()
        stored = await self.kb.create(fields, request_id)
        return knowledge_service_pb2.CreateArticleResponse(article=to_proto(stored))

    async def GetArticle(
        self, request: knowledge_service_pb2.GetArticleRequest, context: Any
    ) -> knowledge_service_pb2.GetArticleResponse:
        slug = parse_name(request.name, COLLECTION)
        return knowledge_service_pb2.GetArticleResponse(article=to_proto(await self.kb.get(slug)))

    async def ListArticles(
        self, request: knowledge_service_pb2.ListArticlesRequest, context: Any
    ) -> knowledge_service_pb2.ListArticlesResponse:
        filters = {"category": request.category, "language": request.language, "tag": request.tag}
        page = Page(page_size(request.page_size), request.page_token, filters)
        if page.position is not None and not isinstance(page.position, str):
            raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN")
        rows, total = await self.kb.list_articles(
            after_slug=page.position,
            limit=page.limit,
            category=request.category.strip().lower(),
            language=request.language.strip(),
            tag=request.tag.strip().lower(),
        )
        rows, token = page.cut(rows, lambda a: a.fields.slug)
        return knowledge_service_pb2.ListArticlesResponse(
            articles=[to_proto(a) for a in rows], next_page_token=token, total_size=total
        )

    async def UpdateArticle(
        self, request: knowledge_service_pb2.UpdateArticleRequest, context: Any
    ) -> knowledge_service_pb2.UpdateArticleResponse:
        v = Violations()
        v.check(request.HasField("article"), "article", "is required")
        slug = parse_name(request.article.name, COLLECTION, field="article.name")
        v.require(request.article.etag, "article.etag")
        v.check(
            not request.article.slug or request.article.slug == slug,
            "article.slug",
            "is immutable and must match the name",
        )
        paths = list(request.update_mask.paths) or list(UPDATABLE)
        for path in paths:
            v.check(path in UPDATABLE, "update_mask", f"{path!r} cannot be updated; use {', '.join(UPDATABLE)}")
        v.raise_if_any()
        current = await self.kb.get(slug)
        if current.etag != request.article.etag:
            raise Aborted(
                "the article changed since it was read; get it again and re-apply the change",
                reason="ETAG_MISMATCH",
                metadata={"current_etag": current.etag},
            )
        new = merge(current.fields, request.article, paths)
        check_fields(new, v)
        v.raise_if_any()
        stored = await self.kb.update(current, new)
        return knowledge_service_pb2.UpdateArticleResponse(article=to_proto(stored))

    async def DeleteArticle(
        self, request: knowledge_service_pb2.DeleteArticleRequest, context: Any
    ) -> knowledge_service_pb2.DeleteArticleResponse:
        slug = parse_name(request.name, COLLECTION)
        await self.kb.delete(slug, request.etag)
        return knowledge_service_pb2.DeleteArticleResponse()

    async def BatchImportArticles(
        self, request: knowledge_service_pb2.BatchImportArticlesRequest, context: Any
    ) -> knowledge_service_pb2.BatchImportArticlesResponse:
        v = Violations()
        v.check(len(request.articles) > 0, "articles", "is required")
        v.check(len(request.articles) <= MAX_BATCH, "articles", f"at most {MAX_BATCH} per call")
        articles = [from_proto(a) for a in request.articles]
        seen: set[str] = set()
        for i, fields in enumerate(articles):
            check_fields(fields, v, prefix=f"articles[{i}]")
            v.check(fields.slug not in seen, f"articles[{i}].slug", "appears twice in the batch")
            seen.add(fields.slug)
        # Validated as a whole first: a bad article fails the call before anything is written.
        v.raise_if_any()
        results = await self.kb.import_articles(articles)
        return knowledge_service_pb2.BatchImportArticlesResponse(
            results=[
                knowledge_service_pb2.ImportResult(
                    slug=fields.slug, article=make_name(COLLECTION, fields.slug), outcome=_OUTCOMES[outcome]
                )
                for fields, (_, outcome) in zip(articles, results, strict=True)
            ]
        )

    async def SearchKnowledge(
        self, request: knowledge_service_pb2.SearchKnowledgeRequest, context: Any
    ) -> knowledge_service_pb2.SearchKnowledgeResponse:
        v = Violations()
        query = request.query.strip()
        v.check(bool(query), "query", "is required")
        v.check(len(query) <= MAX_QUERY_CHARS, "query", f"must be at most {MAX_QUERY_CHARS} characters")
        v.check(0 <= request.top_k <= MAX_TOP_K, "top_k", f"must be between 1 and {MAX_TOP_K}")
        v.check(0.0 <= request.min_score <= 1.0, "min_score", "must be between 0 and 1")
        v.check(
            0 <= request.max_chunks_per_article <= MAX_CHUNKS_PER_ARTICLE,
            "max_chunks_per_article",
            f"must be between 1 and {MAX_CHUNKS_PER_ARTICLE}",
        )
        v.check(len(request.categories) <= MAX_FILTER_VALUES, "categories", f"at most {MAX_FILTER_VALUES}")
        v.check(len(request.tags) <= MAX_FILTER_VALUES, "tags", f"at most {MAX_FILTER_VALUES}")
        language = request.language.strip()
        v.check(not language or bool(LANGUAGE.match(language)), "language", "must be a BCP 47 code such as 'en'")
        given = _given_vectors(request.query_embeddings, self.kb.query_models(), v)
        v.raise_if_any()
        query_language = request.query_language.strip()
        if query_language and not LANGUAGE.match(query_language):
            v.check(False, "query_language", "must be a BCP 47 code such as 'en'")
            v.raise_if_any()
        outcome = await self.kb.search(
            query,
            top_k=request.top_k or DEFAULT_TOP_K,
            min_score=request.min_score,
            filters=Filters(
                categories=tuple(c.strip().lower() for c in request.categories if c.strip()),
                tags=tuple(t.strip().lower() for t in request.tags if t.strip()),
                language=language,
            ),
            per_article=request.max_chunks_per_article or 1,
            query_language=query_language,
            given=given,
        )
        return knowledge_service_pb2.SearchKnowledgeResponse(
            results=[
                knowledge_pb2.SearchResult(
                    article=make_name(COLLECTION, h.hit.slug),
                    title=h.hit.title,
                    url=h.hit.url,
                    chunk_text=h.hit.text,
                    heading=h.hit.heading,
                    chunk_index=h.hit.chunk_index,
                    score=h.score,
                    vector_similarity=h.hit.similarity,
                    category=h.hit.category,
                    language=h.hit.language,
                    section_heading=h.section.heading if h.section else "",
                    section_text=h.section.text if h.section else "",
                    section_similarity=h.section_similarity,
                    coverage=h.coverage,
                    cross_lingual=h.cross_lingual,
                )
                for h in outcome.hits
            ],
            embedding_model=self.kb.model.name,
            query_language=outcome.query.language,
            understood_query=outcome.query.text,
        )

    async def RecordKnowledgeGap(
        self, request: knowledge_service_pb2.RecordKnowledgeGapRequest, context: Any
    ) -> knowledge_service_pb2.RecordKnowledgeGapResponse:
        v = Violations()
        v.check(request.HasField("knowledge_gap"), "knowledge_gap", "is required")
        gap = request.knowledge_gap
        question = " ".join(gap.question.split())
        v.check(bool(question), "knowledge_gap.question", "is required")
        v.check(
            len(question) <= MAX_QUERY_CHARS,
            "knowledge_gap.question",
            f"must be at most {MAX_QUERY_CHARS} characters",
        )
        language = gap.language.strip()
        v.check(
            not language or bool(LANGUAGE.match(language)),
            "knowledge_gap.language",
            "must be a BCP 47 code such as 'en'",
        )
        v.check(gap.channel in common_pb2.Channel.values(), "knowledge_gap.channel", "is not a known channel")
        v.check(gap.outcome in _GAP_OUTCOMES, "knowledge_gap.outcome", "must be LOW_CONFIDENCE or NO_ANSWER_FOUND")
        v.check(
            len(gap.candidates) <= MAX_GAP_CANDIDATES,
            "knowledge_gap.candidates",
            f"at most {MAX_GAP_CANDIDATES}",
        )
        candidates: list[Candidate] = []
        for i, c in enumerate(gap.candidates):
            try:
                slug = parse_name(c.article, COLLECTION, field=f"knowledge_gap.candidates[{i}].article")
            except InvalidArgument as exc:
                v.items.extend(exc.violations)
                continue
            if not (math.isfinite(c.score) and -1.0 <= c.score <= 1.0):
                v.add(f"knowledge_gap.candidates[{i}].score", "must be between -1 and 1")
                continue
            candidates.append(Candidate(make_name(COLLECTION, slug), c.score))
        if request.ticket:
            try:
                parse_name(request.ticket, "tickets", field="ticket")
            except InvalidArgument as exc:
                v.items.extend(exc.violations)
        request_id = request.request_id.strip() or None
        v.check(
            request_id is None or len(request_id) <= MAX_REQUEST_ID,
            "request_id",
            f"must be at most {MAX_REQUEST_ID} characters",
        )
        v.raise_if_any()
        # The ticket is not stored: nothing recorded here leads back to a customer (see README).
        stored, duplicate = await self.kb.record_gap(
            NewGap(
                question=redact(question),
                language=language,
                channel=gap.channel,
                outcome=gap.outcome,
                candidates=top_candidates(candidates, MAX_GAP_CANDIDATES),
            ),
            request_id,
        )
        return knowledge_service_pb2.RecordKnowledgeGapResponse(knowledge_gap=_gap_proto(stored), duplicate=duplicate)

    async def ListKnowledgeGaps(
        self, request: knowledge_service_pb2.ListKnowledgeGapsRequest, context: Any
    ) -> knowledge_service_pb2.ListKnowledgeGapsResponse:
        size = page_size(request.page_size)
        v = Violations()
        v.check(
            0 <= request.max_gaps_per_group <= MAX_GAPS_PER_GROUP,
            "max_gaps_per_group",
            f"must be between 1 and {MAX_GAPS_PER_GROUP}",
        )
        v.raise_if_any()
        page = Page(size, request.page_token, "knowledgeGaps")
        rows, total = await self.kb.list_gap_groups(
            after=_gap_page_position(page.position),
            limit=page.limit,
            gaps_per_group=request.max_gaps_per_group or DEFAULT_GAPS_PER_GROUP,
        )
        groups, token = page.cut(rows, lambda g: [g.newest_time.isoformat(), g.id])
        return knowledge_service_pb2.ListKnowledgeGapsResponse(
            knowledge_gap_groups=[
                knowledge_pb2.KnowledgeGapGroup(
                    representative=_gap_proto(g.representative),
                    gap_count=g.gap_count,
                    newest_time=_timestamp(g.newest_time),
                    gaps=[_gap_proto(m) for m in g.gaps],
                    candidates=[_candidate_proto(c) for c in g.candidates],
                )
                for g in groups
            ],
            next_page_token=token,
            total_size=total,
        )


def _gap_page_position(position: Any) -> tuple[datetime, int] | None:
    if position is None:
        return None
    try:
        newest, group_id = position
        parsed = datetime.fromisoformat(newest)
        if not isinstance(group_id, int) or parsed.tzinfo is None:
            raise TypeError
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN") from exc
    return parsed, group_id


def _timestamp(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _candidate_proto(c: Candidate) -> knowledge_pb2.KnowledgeGapCandidate:
    return knowledge_pb2.KnowledgeGapCandidate(article=c.article, score=c.score)


def _gap_proto(gap: StoredGap) -> knowledge_pb2.KnowledgeGap:
    return knowledge_pb2.KnowledgeGap(
        name=make_name(GAP_COLLECTION, gap.id),
        question=gap.question,
        language=gap.language,
        channel=gap.channel,  # type: ignore[arg-type]
        outcome=gap.outcome,  # type: ignore[arg-type]
        candidates=[_candidate_proto(c) for c in gap.candidates],
        create_time=_timestamp(gap.create_time),
    )


def _given_vectors(
    embeddings: Iterable[knowledge_pb2.TextEmbedding], models: dict[str, int], v: Violations
) -> dict[str, Vector]:
    """The caller's query vectors for the models the search uses (by name, normalised); the
    problems of those it sent are added to `v`. Vectors of other models are ignored."""
    given: dict[str, Vector] = {}
    for i, embedding in enumerate(embeddings):
        field = f"query_embeddings[{i}]"
        if i >= MAX_QUERY_EMBEDDINGS:
            v.add("query_embeddings", f"at most {MAX_QUERY_EMBEDDINGS}")
            break
        if embedding.model in given:
            v.add(f"{field}.model", "appears twice")
            continue
        dimension = models.get(embedding.model)
        if dimension is None:
            continue
        values = np.asarray(embedding.values, dtype=np.float32)
        norm = float(np.linalg.norm(values)) if values.size else 0.0
        if values.size != dimension:
            v.add(f"{field}.values", f"must hold {dimension} values for {embedding.model}")
        elif not math.isfinite(norm) or norm == 0.0:
            v.add(f"{field}.values", "must be finite and not all zero")
        else:
            given[embedding.model] = values / norm
    return given
