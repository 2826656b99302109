"""Knowledge gaps from the agent: an unanswerable question and a low-confidence answer are
recorded in the real knowledge service (once per inbound message, even when redelivered), and a
knowledge service that refuses the record never stops the reply."""

from __future__ import annotations

from typing import Any

import pytest
from agent_helpers import Mesh, eventually, message, publish  # type: ignore[import-not-found]
from aiokafka import AIOKafkaProducer
from fte.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_agent import metrics
from fte_agent.processor import gap_request_id, knowledge_gap
from fte_agent.tools import KnowledgeSearcher
from fte_runtime.grpc_client import connect
from fte_runtime.settings import KafkaSettings

Gap = knowledge_pb2.KnowledgeGap


async def gaps_with(mesh: Mesh, tokens: dict[str, str], question: str) -> list[Gap]:
    """Every recorded gap with this question, through ListKnowledgeGaps (the knowledge service is
    shared by the session's tests: each test asks its own questions)."""
    channel = connect(mesh.knowledge, token=tokens["kb-reader"], default_timeout=10)
    try:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        found: list[Gap] = []
        token = ""
        while True:
            page = await stub.ListKnowledgeGaps(
                knowledge_service_pb2.ListKnowledgeGapsRequest(page_size=100, page_token=token, max_gaps_per_group=100)
            )
            found += [g for group in page.knowledge_gap_groups for g in group.gaps if g.question == question]
            token = page.next_page_token
            if not token:
                return found
    finally:
        await channel.close()


def count(kind: str, result: str) -> float:
    value: float = metrics.KNOWLEDGE_GAPS.labels(kind, result)._value.get()
    return value


@pytest.mark.kafka
async def test_an_unanswerable_question_is_listed_as_a_knowledge_gap(
    start_agent: Any, mesh: Mesh, tokens: dict[str, str], kafka_settings: KafkaSettings
) -> None:
    agent = await start_agent()
    msg, key = message("email", "Is there an SAP connector?", subject="SAP")
    question = "SAP Is there an SAP connector?"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await publish(producer, agent.agent.settings.incoming_topic, msg, key)
    finally:
        await producer.stop()
    [gap] = await eventually(lambda: gaps_with(mesh, tokens, question), what="the knowledge gap")
    assert gap.outcome == Gap.OUTCOME_NO_ANSWER_FOUND
    assert gap.language == "en"
    assert gap.channel == common_pb2.CHANNEL_EMAIL
    assert gap.candidates
    assert all(c.article.startswith("articles/") for c in gap.candidates)
    assert [c.score for c in gap.candidates] == sorted((c.score for c in gap.candidates), reverse=True)

    # The ticket was escalated as "no answer found", and the reply went out.
    channel = connect(f"127.0.0.1:{agent.port}", token=tokens["staff"], default_timeout=10)
    try:
        tickets = agent_service_pb2_grpc.AgentServiceStub(channel)
        reply = await tickets.ListTickets(agent_service_pb2.ListTicketsRequest(page_size=10))
        [ticket] = reply.tickets
        assert ticket.escalation_reason == common_pb2.ESCALATION_REASON_NO_ANSWER_FOUND
    finally:
        await channel.close()

    # A redelivery of the decided message (a crash before the reply was recorded) records no second gap.
    await agent.agent.pool.execute(
        "UPDATE inbound SET state = 'decided' WHERE channel_message_id = $1", msg.channel_message_id
    )
    assert await agent.agent.processor.handle(msg) == "replied"
    assert [g.name for g in await gaps_with(mesh, tokens, question)] == [gap.name]


async def test_a_low_confidence_answer_is_recorded_and_a_confident_one_is_not(
    start_agent: Any, mesh: Mesh, tokens: dict[str, str]
) -> None:
    # A margin that makes every answer "low confidence", then none.
    doubtful = await start_agent(kb_gap_margin=1.0)
    msg, _ = message("web_form", "Where do I reset my password for the web app?", subject="Reset")
    assert await doubtful.agent.processor.handle(msg) == "replied"
    [gap] = await gaps_with(mesh, tokens, "Reset Where do I reset my password for the web app?")
    assert gap.outcome == Gap.OUTCOME_LOW_CONFIDENCE
    assert gap.channel == common_pb2.CHANNEL_WEB_FORM
    assert gap.candidates[0].score > 0.35  # it was answered: a good enough passage was found

    confident = await start_agent(kb_gap_margin=0.0, kb_min_similarity=0.0)
    msg, _ = message("web_form", "I forgot my password, how can I reset it?", subject="Forgot")
    assert await confident.agent.processor.handle(msg) == "replied"
    assert await gaps_with(mesh, tokens, "Forgot I forgot my password, how can I reset it?") == []


async def test_a_refused_record_never_stops_the_reply(start_agent: Any, mesh: Mesh, tokens: dict[str, str]) -> None:
    agent = await start_agent()
    processor = agent.agent.processor
    # Searching is allowed with this token, recording a gap is not (PERMISSION_DENIED from the real service).
    channel = connect(mesh.knowledge, token=tokens["kb-reader"], default_timeout=10)
    try:
        processor.searcher = KnowledgeSearcher(knowledge_service_pb2_grpc.KnowledgeServiceStub(channel))
        failed = count("no_answer_found", "failed")
        msg, _ = message("whatsapp", "Does Tasklane integrate with my espresso machine?")
        assert await processor.handle(msg) == "replied"
        assert count("no_answer_found", "failed") == failed + 1
        assert await gaps_with(mesh, tokens, "Does Tasklane integrate with my espresso machine?") == []
    finally:
        await channel.close()


def test_which_decisions_are_gaps() -> None:
    searches = [
        {"query": "q", "top_score": 0.3, "slugs": ["a", "b"], "similarities": [0.3, 0.41]},
        {"query": "q2", "top_score": 0.2, "slugs": ["b", "c"], "similarities": [0.2, 0.1]},
    ]
    no_answer = {"action": "escalate", "escalation_reason": common_pb2.ESCALATION_REASON_NO_ANSWER_FOUND}
    assert knowledge_gap({**no_answer, "searches": searches}, 0.45) == (
        Gap.OUTCOME_NO_ANSWER_FOUND,
        [("articles/b", 0.41), ("articles/a", 0.3), ("articles/c", 0.1)],
    )
    # Nothing was searched (a message with no question): not a gap in the knowledge base.
    assert knowledge_gap({**no_answer, "searches": []}, 0.45) is None
    refund = {"action": "escalate", "escalation_reason": common_pb2.ESCALATION_REASON_REFUND, "searches": searches}
    assert knowledge_gap(refund, 0.45) is None
    answer = {"action": "answer", "searches": searches}
    assert knowledge_gap(answer, 0.45) == (Gap.OUTCOME_LOW_CONFIDENCE, knowledge_gap(answer, 0.45)[1])  # type: ignore[index]
    assert knowledge_gap(answer, 0.41) is None
    # A decision stored before similarities were kept: only the first result's is known.
    old = {"action": "answer", "searches": [{"query": "q", "top_score": 0.5, "slugs": ["a", "b"]}]}
    assert knowledge_gap(old, 0.45) is None
    assert gap_request_id(1, "m-1") == gap_request_id(1, "m-1") != gap_request_id(2, "m-1")
    assert gap_request_id(1, "m-1").startswith("agent-gap-")
