"""Knowledge gaps through the gRPC API: idempotent recording, grouping of similar questions by
their embeddings, newest group first, pagination, scopes, bad input and retention."""

from __future__ import annotations

import grpc
import pytest
from fte.common.v1 import common_pb2
from fte.knowledge.v1 import knowledge_pb2
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_knowledge.server import Knowledge
from fte_runtime.grpc_client import connect
from knowledge_helpers import Client, StartKnowledge, Stub, failure, violations  # type: ignore[import-not-found]

Gap = knowledge_pb2.KnowledgeGap
NO_ANSWER = Gap.OUTCOME_NO_ANSWER_FOUND
LOW = Gap.OUTCOME_LOW_CONFIDENCE

SAP = ["how do I connect to SAP", "SAP integration?", "is there an SAP connector"]
# Unrelated to each other and to SAP (cosine well below the grouping threshold).
UNRELATED = [
    "can I pay with bitcoin",
    "what is the weather on Mars",
    "How do I change the colour of my dashboard",
    "Can I use Tasklane on a smart fridge?",
    "my cat walked over the keyboard and now everything is in French",
]


def gap(question: str, outcome: int = NO_ANSWER, candidates: dict[str, float] | None = None) -> Gap:
    return Gap(
        question=question,
        language="en",
        channel=common_pb2.CHANNEL_EMAIL,
        outcome=outcome,  # type: ignore[arg-type]
        candidates=[knowledge_pb2.KnowledgeGapCandidate(article=a, score=s) for a, s in (candidates or {}).items()],
    )


async def record(stub: Stub, question: str, request_id: str = "", **kw: object) -> ks.RecordKnowledgeGapResponse:
    reply: ks.RecordKnowledgeGapResponse = await stub.RecordKnowledgeGap(
        ks.RecordKnowledgeGapRequest(knowledge_gap=gap(question, **kw), request_id=request_id)  # type: ignore[arg-type]
    )
    return reply


async def all_groups(stub: Stub, page_size: int = 100) -> list[knowledge_pb2.KnowledgeGapGroup]:
    groups: list[knowledge_pb2.KnowledgeGapGroup] = []
    token = ""
    while True:
        page = await stub.ListKnowledgeGaps(ks.ListKnowledgeGapsRequest(page_size=page_size, page_token=token))
        groups.extend(page.knowledge_gap_groups)
        token = page.next_page_token
        if not token:
            return groups


async def test_record_is_idempotent_by_request_id(client_for: Client, knowledge: Knowledge) -> None:
    agent = client_for("agent")
    first = await record(agent, "Where is the SAP connector? Write to jo@example.com", "agent-gap-1", outcome=LOW)
    again = await record(agent, "Where is the SAP connector? Write to jo@example.com", "agent-gap-1", outcome=LOW)
    assert not first.duplicate
    assert again.duplicate
    assert again.knowledge_gap == first.knowledge_gap
    assert first.knowledge_gap.name.startswith("knowledgeGaps/")
    # Personal data typed into the question is not kept.
    assert first.knowledge_gap.question == "Where is the SAP connector? Write to [email]"
    assert first.knowledge_gap.outcome == LOW
    assert await knowledge.kb.store.pool.fetchval("SELECT count(*) FROM gaps") == 1

    # The same key with another question is a caller bug, not a retry.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await record(agent, "something else entirely", "agent-gap-1")
    assert failure(err.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    # Without a key every call records a gap.
    await record(agent, "Where is the SAP connector?")
    await record(agent, "Where is the SAP connector?")
    assert await knowledge.kb.store.pool.fetchval("SELECT count(*) FROM gaps") == 3


async def test_similar_questions_group_together_newest_first(staff: Stub) -> None:
    await record(staff, SAP[0], candidates={"articles/integrations-overview": 0.31, "articles/api-keys": 0.2})
    await record(staff, UNRELATED[0], candidates={"articles/billing-plans": 0.25})
    await record(staff, SAP[1], candidates={"articles/integrations-overview": 0.4})
    await record(staff, SAP[2], outcome=LOW, candidates={"articles/webhooks": 0.33})

    groups = await all_groups(staff)
    assert [g.gap_count for g in groups] == [3, 1]
    sap, other = groups
    assert sap.representative.question == SAP[0]
    assert [m.question for m in sap.gaps] == [SAP[2], SAP[1], SAP[0]]  # newest first
    assert sap.newest_time == sap.gaps[0].create_time
    assert [(c.article, round(c.score, 2)) for c in sap.candidates] == [
        ("articles/integrations-overview", 0.4),
        ("articles/webhooks", 0.33),
        ("articles/api-keys", 0.2),
    ]
    assert [m.question for m in other.gaps] == [UNRELATED[0]]
    assert sap.newest_time.ToDatetime() > other.newest_time.ToDatetime()

    # A new question about the older topic moves its group to the top.
    await record(staff, "paying in bitcoin, possible?")
    groups = await all_groups(staff)
    assert [(g.representative.question, g.gap_count) for g in groups] == [(UNRELATED[0], 2), (SAP[0], 3)]

    # Fewer members listed, the count stays.
    page = await staff.ListKnowledgeGaps(ks.ListKnowledgeGapsRequest(max_gaps_per_group=1))
    assert [(len(g.gaps), g.gap_count) for g in page.knowledge_gap_groups] == [(1, 2), (1, 3)]
    assert page.total_size == 2


async def test_pagination_over_several_pages(staff: Stub) -> None:
    for q in UNRELATED:
        await record(staff, q)
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await staff.ListKnowledgeGaps(ks.ListKnowledgeGapsRequest(page_size=2, page_token=token))
        assert page.total_size == len(UNRELATED)
        pages.append([g.representative.question for g in page.knowledge_gap_groups])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [q for p in pages for q in p] == list(reversed(UNRELATED))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.ListKnowledgeGaps(ks.ListKnowledgeGapsRequest(page_token="not-a-token"))
    assert failure(err.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.ListKnowledgeGaps(ks.ListKnowledgeGapsRequest(max_gaps_per_group=101))
    assert violations(err.value) == ["max_gaps_per_group"]


async def test_scopes(client_for: Client) -> None:
    reader, gateway, agent = client_for("kb-reader"), client_for("gateway"), client_for("agent")
    await record(agent, SAP[0])
    assert [g.gap_count for g in await all_groups(reader)] == [1]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await record(reader, SAP[1])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The agent records gaps (kb.gaps.write) but cannot change articles (no kb.write).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await agent.CreateArticle(ks.CreateArticleRequest(article=knowledge_pb2.Article(slug="s", title="t", body="b")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for call in (record(gateway, SAP[1]), gateway.ListKnowledgeGaps(ks.ListKnowledgeGapsRequest())):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_requests(staff: Stub) -> None:
    bad = Gap(
        question="  ",
        language="english!",
        channel=99,  # type: ignore[arg-type]
        candidates=[
            knowledge_pb2.KnowledgeGapCandidate(article="sap", score=0.2),
            knowledge_pb2.KnowledgeGapCandidate(article="articles/x", score=7.0),
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.RecordKnowledgeGap(
            ks.RecordKnowledgeGapRequest(knowledge_gap=bad, ticket="TL-1", request_id="x" * 201)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err.value) == [
        "knowledge_gap.question",
        "knowledge_gap.language",
        "knowledge_gap.channel",
        "knowledge_gap.outcome",
        "knowledge_gap.candidates[0].article",
        "knowledge_gap.candidates[1].score",
        "ticket",
        "request_id",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.RecordKnowledgeGap(ks.RecordKnowledgeGapRequest())
    assert "knowledge_gap" in violations(err.value)
    # A well-formed ticket is accepted and not stored anywhere.
    reply = await staff.RecordKnowledgeGap(
        ks.RecordKnowledgeGapRequest(knowledge_gap=gap("Is there an SAP connector?"), ticket="tickets/TL-1234")
    )
    assert reply.knowledge_gap.name


async def test_old_gaps_are_deleted_after_retention(start_knowledge: StartKnowledge, tokens: dict[str, str]) -> None:
    knowledge = await start_knowledge(gap_retention_days=30)
    channel = connect(f"127.0.0.1:{knowledge.grpc.port}", token=tokens["staff"], default_timeout=60.0)
    try:
        stub = Stub(channel)
        await record(stub, UNRELATED[0])
        await record(stub, SAP[0])
        await knowledge.kb.store.pool.execute(
            "UPDATE gaps SET create_time = now() - interval '31 days' WHERE question = $1", UNRELATED[0]
        )
        await record(stub, SAP[1])
        groups = await all_groups(stub)
        assert [(g.representative.question, g.gap_count) for g in groups] == [(SAP[0], 2)]
        assert await knowledge.kb.store.pool.fetchval("SELECT count(*) FROM gap_groups") == 1
    finally:
        await channel.close()
