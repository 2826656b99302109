"""The agent's tools, shared by every engine: search_knowledge_base, get_customer_history,
create_ticket, escalate_to_human, send_response.

Tools that change something only record the engine's intent in an `Outcome`; the worker then
stores it and sends the reply itself, idempotently, so no engine can send twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from fte.common.v1 import common_pb2
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.embeddings import Vector

from fte_agent import reasons
from fte_agent.compose import Passage

C = common_pb2


@dataclass(frozen=True, slots=True)
class Request:
    """The message an engine reasons about. `text` is customer data, never instructions."""

    ticket_id: str
    channel: int
    text: str
    subject: str
    display_name: str
    customer: str
    new_ticket: bool


@dataclass
class Search:
    query: str
    top_score: float
    slugs: list[str]
    # Question/passage cosine similarity of each result, in the order of `slugs`.
    similarities: list[float] = field(default_factory=list)


@dataclass
class Outcome:
    reply_text: str | None = None
    escalation_reason: int = 0
    escalation_detail: str = ""
    # The first line of the hand-over when the reason's own line would not fit (a follow-up).
    escalation_lead: str = ""
    category: int = 0
    priority: int = 0
    subject: str = ""
    searches: list[Search] = field(default_factory=list)
    cited: list[Passage] = field(default_factory=list)
    steps: int = 0


class Searcher(Protocol):
    """The knowledge base as the agent uses it (KnowledgeSearcher)."""

    async def __call__(
        self, query: str, top_k: int, language: str, vectors: Mapping[str, Vector] | None = None
    ) -> list[Passage]: ...

    async def article_body(self, article: str) -> str: ...

    async def record_gap(
        self,
        *,
        question: str,
        language: str,
        channel: int,
        ticket: str,
        outcome: int,
        candidates: list[tuple[str, float]],
        request_id: str,
        timeout: float = 2.0,
    ) -> str: ...


HistoryFn = Callable[[int], Awaitable[list[dict[str, Any]]]]


class KnowledgeSearcher:
    """search_knowledge_base over KnowledgeService.SearchKnowledge (and GetArticle for the whole
    body of the article an answer comes from)."""

    # Article bodies change rarely and there are few of them: keep each for a few minutes.
    BODY_TTL_SECONDS = 300.0
    BODY_CACHE_SIZE = 512

    def __init__(self, stub: knowledge_service_pb2_grpc.KnowledgeServiceAsyncStub) -> None:
        self.stub = stub
        self._bodies: dict[str, tuple[float, str]] = {}

    async def __call__(
        self, query: str, top_k: int, language: str, vectors: Mapping[str, Vector] | None = None
    ) -> list[Passage]:
        """`vectors`: embeddings of `query` by model name, already computed by the reader; the
        knowledge service uses those of its models instead of computing them again."""
        reply = await self.stub.SearchKnowledge(
            knowledge_service_pb2.SearchKnowledgeRequest(
                query=query[:2000],
                top_k=top_k,
                query_language=language,
                max_chunks_per_article=2,
                # A longer query is cut, and the vectors are of the whole of it.
                query_embeddings=[
                    knowledge_pb2.TextEmbedding(model=model, values=vector.tolist())
                    for model, vector in (vectors or {}).items()
                ]
                if len(query) <= 2000
                else [],
            )
        )
        return [
            Passage(
                article=r.article,
                title=r.title,
                url=r.url,
                heading=r.heading,
                text=r.chunk_text,
                score=r.score,
                similarity=r.vector_similarity,
                section_heading=r.section_heading,
                section_text=r.section_text,
                section_similarity=r.section_similarity,
                partial=r.coverage < 1.0,
                translated=r.cross_lingual,
                language=r.language,
            )
            for r in reply.results
        ]

    async def article_body(self, article: str) -> str:
        """The article's markdown body; "" if it is gone."""
        now = time.monotonic()
        cached = self._bodies.get(article)
        if cached is not None and now - cached[0] < self.BODY_TTL_SECONDS:
            return cached[1]
        try:
            reply = await self.stub.GetArticle(knowledge_service_pb2.GetArticleRequest(name=article))
            body = reply.article.body
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            body = ""
        if len(self._bodies) >= self.BODY_CACHE_SIZE:
            self._bodies.clear()
        self._bodies[article] = (now, body)
        return body

    async def record_gap(
        self,
        *,
        question: str,
        language: str,
        channel: int,
        ticket: str,
        outcome: int,
        candidates: list[tuple[str, float]],
        request_id: str,
        timeout: float = 2.0,
    ) -> str:
        """KnowledgeService.RecordKnowledgeGap (idempotent by `request_id`); the gap's name.
        `outcome` is a KnowledgeGap.Outcome; `candidates` are (article name, similarity)."""
        reply = await self.stub.RecordKnowledgeGap(
            knowledge_service_pb2.RecordKnowledgeGapRequest(
                knowledge_gap=knowledge_pb2.KnowledgeGap(
                    question=question[:2000],
                    language=language,
                    channel=channel,  # type: ignore[arg-type]
                    outcome=outcome,  # type: ignore[arg-type]
                    candidates=[
                        knowledge_pb2.KnowledgeGapCandidate(article=a, score=max(-1.0, min(1.0, s)))
                        for a, s in candidates[:10]
                    ],
                ),
                ticket=ticket,
                request_id=request_id,
            ),
            timeout=timeout,
        )
        name: str = reply.knowledge_gap.name
        return name


# The reasons an engine may name (the registry's `llm` ones).
ESCALATION_REASONS = {name: reasons.by_name(name).value for name in reasons.llm_allowed()}
CATEGORIES = {
    "general": C.CATEGORY_GENERAL,
    "technical": C.CATEGORY_TECHNICAL,
    "billing": C.CATEGORY_BILLING,
    "bug_report": C.CATEGORY_BUG_REPORT,
    "feedback": C.CATEGORY_FEEDBACK,
}
PRIORITIES = {"low": C.PRIORITY_LOW, "medium": C.PRIORITY_MEDIUM, "high": C.PRIORITY_HIGH}


class Toolbox:
    """One message's tools. Engines call these and nothing else."""

    def __init__(
        self,
        request: Request,
        searcher: Searcher,
        history: HistoryFn,
        language: str,
        read: tuple[str, Mapping[str, Vector]] | None = None,
    ) -> None:
        """`read`: the text the reader read, with its embeddings by model name."""
        self.request = request
        self._searcher = searcher
        self._history = history
        self.language = language
        self._read = read
        self.outcome = Outcome()

    async def search_knowledge_base(self, query: str, top_k: int = 5) -> list[Passage]:
        vectors = self._read[1] if self._read is not None and query == self._read[0] else None
        results = await self._searcher(query, top_k, self.language, vectors)
        self.outcome.searches.append(
            Search(
                query=query,
                top_score=results[0].similarity if results else 0.0,
                slugs=[p.slug for p in results],
                similarities=[p.similarity for p in results],
            )
        )
        return results

    async def read_article(self, article: str) -> str:
        """The whole body of a retrieved article (for the section that answers best)."""
        return await self._searcher.article_body(article)

    async def get_customer_history(self, limit: int = 10) -> list[dict[str, Any]]:
        return await self._history(max(1, min(limit, 50)))

    async def create_ticket(self, subject: str = "", category: str = "", priority: str = "") -> dict[str, Any]:
        """The ticket exists before any reasoning; this sets what the engine learned about it."""
        if subject:
            self.outcome.subject = subject[:200]
        if category in CATEGORIES:
            self.outcome.category = CATEGORIES[category]
        if priority in PRIORITIES:
            self.outcome.priority = PRIORITIES[priority]
        return {"ticket": f"tickets/{self.request.ticket_id}", "created": self.request.new_ticket}

    async def escalate_to_human(self, reason: str, detail: str = "") -> dict[str, Any]:
        self.outcome.escalation_reason = ESCALATION_REASONS.get(reason, C.ESCALATION_REASON_NO_ANSWER_FOUND)
        self.outcome.escalation_detail = detail[:500]
        return {"escalated": True, "ticket": f"tickets/{self.request.ticket_id}"}

    async def send_response(self, text: str) -> dict[str, Any]:
        self.outcome.reply_text = text
        return {"queued": True}
