"""KnowledgeService over gRPC: request validation and proto mapping around `KnowledgeBase`."""

from __future__ import annotations

import uuid
from typing import Any

from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.errors import Aborted, InvalidArgument, Violations
from fte_runtime.names import make_name, parse_name
from fte_runtime.pagination import decode_token, encode_token, page_size

from fte_knowledge.articles import COLLECTION, LANGUAGE, UPDATABLE, check_fields, from_proto, merge, to_proto
from fte_knowledge.service import KnowledgeBase, Outcome
from fte_knowledge.store import Filters

MAX_QUERY_CHARS = 2000
MAX_TOP_K = 20
DEFAULT_TOP_K = 5
MAX_CHUNKS_PER_ARTICLE = 5
MAX_BATCH = 500
MAX_FILTER_VALUES = 20

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
        size = page_size(request.page_size)
        filters = {"category": request.category, "language": request.language, "tag": request.tag}
        after = decode_token(request.page_token, filters)
        if after is not None and not isinstance(after, str):
            raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN")
        rows, total = await self.kb.store.list_articles(
            after_slug=after,
            limit=size + 1,
            category=request.category.strip().lower(),
            language=request.language.strip(),
            tag=request.tag.strip().lower(),
        )
        more = len(rows) > size
        rows = rows[:size]
        token = encode_token(rows[-1].fields.slug, filters) if more and rows else ""
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
