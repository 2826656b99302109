"""The labeled dev set against the offline engine, the real knowledge service and real embeddings.

Prints the scores; floors: escalation decision accuracy >= 92%, right article >= 85% of the
answerable messages. (The regex policy before the learned reader, written against this set, held
95% / 90%; the reader is measured on the paraphrase set it never saw: see test_agent_reader.py.)
Every reply is also held to its channel's style limits.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from agent_helpers import CHANNELS  # type: ignore[import-not-found]
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte_agent import compose, packs
from fte_agent.reasons import name_of
from fte_agent.reasons import registry as reasons_registry
from fte_agent.server import build_reasoner
from fte_agent.settings import AgentSettings
from fte_agent.tools import KnowledgeSearcher, Request, Toolbox
from fte_runtime.grpc_client import connect

DEV_SET = Path(__file__).parent / "data" / "dev_set.jsonl"


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_dev_set_is_broad() -> None:
    rows = load()
    assert len(rows) >= 80
    assert {r["channel"] for r in rows} == set(CHANNELS)
    reasons = {r["expect"].get("reason") for r in rows if r["expect"]["action"] == "escalate"}
    assert reasons == {r.name for r in reasons_registry()} - {"manual"}
    assert sum(r["expect"]["action"] == "answer" for r in rows) >= 40


async def test_offline_engine_scores_on_the_dev_set(knowledge_target: str, tokens: dict[str, str]) -> None:
    settings = AgentSettings()
    reasoner = build_reasoner(settings)
    signature = packs.playbook(settings.playbook_file).signature
    rows = load()
    decisions_right = reasons_right = answerable = article_right = 0
    misses: list[str] = []
    by_channel: Counter[str] = Counter()
    async with connect(knowledge_target, token=tokens["agent"], default_timeout=10) as channel:
        searcher = KnowledgeSearcher(knowledge_service_pb2_grpc.KnowledgeServiceStub(channel))
        for row in rows:
            ch = CHANNELS[row["channel"]]
            request = Request(
                ticket_id="T-DEV",
                channel=ch,
                text=row["text"],
                subject=row["subject"],
                display_name=row["display_name"],
                customer="customers/dev",
                new_ticket=True,
            )
            assessment = await reasoner.assess(row["text"], row["subject"])

            async def no_history(limit: int) -> list[dict[str, Any]]:
                return []

            tools = Toolbox(request, searcher, no_history, assessment.language, (assessment.text, assessment.vectors))
            decision = await reasoner.decide(tools, assessment, waiting_for_person=False)
            expect = row["expect"]
            got_reason = name_of(decision.escalation_reason) if decision.action == "escalate" else ""
            if decision.action == expect["action"]:
                decisions_right += 1
                if expect["action"] == "escalate" and got_reason == expect["reason"]:
                    reasons_right += 1
            if expect["action"] == "answer":
                answerable += 1
                if decision.article == expect["article"]:
                    article_right += 1
                    assert decision.article_url
                    assert decision.article_url in decision.reply_text
            if (
                decision.action != expect["action"]
                or (expect["action"] == "answer" and decision.article != expect["article"])
                or (expect["action"] == "escalate" and got_reason != expect["reason"])
            ):
                misses.append(
                    f"  {row['id']} {row['channel']:<8} expected {expect} got {decision.action} "
                    f"{decision.article or got_reason} | {row['text'][:60]!r}"
                )
            # Channel style and guardrails hold for every reply, answered or escalated.
            text = decision.reply_text
            if ch == CHANNELS["email"]:
                assert compose.word_count(text) <= compose.EMAIL_MAX_WORDS
                assert text.startswith(("Hi", "Hola", "Hallo"))
                assert signature in text
            elif ch == CHANNELS["whatsapp"]:
                assert len(text) <= compose.WHATSAPP_MAX_CHARS
                if decision.action == "answer":
                    assert len(text) <= compose.WHATSAPP_TARGET_CHARS + 80, text
            else:
                assert compose.word_count(text) <= compose.WEB_MAX_WORDS
            assert "FTE-GUARD" not in text
            assert "system prompt" not in text.lower()
            if decision.action == "escalate":
                assert "T-DEV" in text  # the reference to follow up on
                assert "UTC" in text  # and by when
            by_channel[row["channel"]] += 1
    escalation_accuracy = decisions_right / len(rows)
    article_accuracy = article_right / answerable
    escalations = sum(r["expect"]["action"] == "escalate" for r in rows)
    print(
        f"\ndev set: {len(rows)} messages {dict(by_channel)}\n"
        f"  escalation decision accuracy {escalation_accuracy:.1%} ({decisions_right}/{len(rows)})\n"
        f"  escalation reason accuracy   {reasons_right / escalations:.1%} ({reasons_right}/{escalations})\n"
        f"  right article (answerable)   {article_accuracy:.1%} ({article_right}/{answerable})"
    )
    if misses:
        print("misses:\n" + "\n".join(misses))
    assert escalation_accuracy >= 0.92
    assert article_accuracy >= 0.85
