"""One interface over both engines, with the deterministic policy and guardrails around them.

The policy's escalation verdict is applied before any engine runs and cannot be overridden; an
engine's reply is checked (grounded in retrieved passages, no competitor talk, no promises, no
internals, channel length) and replaced by the offline engine's when it fails a check.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from fte.common.v1 import common_pb2

from fte_agent import compose, policy, reasons
from fte_agent.compose import Voice
from fte_agent.packs import Pack, Playbook
from fte_agent.tools import Outcome, Toolbox

C = common_pb2
log = logging.getLogger("fte.agent.reasoner")

_PROMISES = re.compile(
    r"\b(refund|discount|compensat\w*|guarantee\w*|free of charge|credit (?:your|the) account|waive\w*|"
    r"we will (?:fix|ship|release)|by tomorrow|next week)\b",
    re.I,
)
_INTERNALS = re.compile(r"(system prompt|internal note|FTE-GUARD|my instructions|i was instructed|policy rule)", re.I)
_URL = re.compile(r"https?://[^\s)>\]]+")


class Engine(Protocol):
    name: str

    async def run(self, tools: Toolbox, assessment: policy.Assessment) -> None: ...


class Action(StrEnum):
    """What the agent does with one message."""

    ANSWER = "answer"  # a grounded answer; the ticket is resolved
    ESCALATE = "escalate"  # handed to a person
    ACKNOWLEDGE = "acknowledge"  # added to a ticket that already waits for a person
    CLOSE = "close"  # a thank-you or closing: the ticket is resolved
    GREET = "greet"  # a greeting only: asked how to help
    CLARIFY = "clarify"  # unclear or empty: asked one clarifying question
    VERIFY = "verify"  # a one-time code sent back: answered with the verification's outcome only


# The intents answered without the knowledge base, with the pack sentence each gets.
_CONVERSATIONAL = {
    "thanks": (Action.CLOSE, "close"),
    "greeting": (Action.GREET, "greeting"),
    "unclear": (Action.CLARIFY, "clarify"),
    "empty": (Action.CLARIFY, "empty"),
}


@dataclass
class Decision:
    """What the agent decided for one message; stored with the ticket and shown to staff."""

    action: Action
    reply_text: str
    engine: str
    language: str
    sentiment: float
    category: int
    priority: int
    escalation_reason: int = 0
    escalation_detail: str = ""
    article: str = ""
    article_url: str = ""
    injection: bool = False
    searches: list[dict[str, Any]] = field(default_factory=list)
    guardrail: str = ""
    follow_up_by: str = ""
    intent: str = ""
    # Why: the reader's label and score, the next best labels, the rule that fired if any.
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["action"] = str(self.action)
        data["escalation_reason_name"] = reasons.name_of(self.escalation_reason)
        return data


@dataclass(frozen=True)
class Draft:
    """A suggested reply for staff, never sent by the agent."""

    text: str
    article: str
    article_url: str
    engine: str


def check_reply(text: str, outcome: Outcome, channel: int, competitors: tuple[str, ...] = ()) -> str:
    """Why an engine's reply may not be sent, or "" when it may."""
    if not text.strip():
        return "empty reply"
    grounding = " ".join(f"{p.title} {p.text} {p.url}" for p in outcome.cited).lower()
    if not outcome.cited:
        return "reply not grounded in a retrieved passage"
    lower = text.lower()
    for name in competitors:
        if re.search(rf"\b{re.escape(name)}\b", lower) and name not in grounding:
            return f"mentions a competitor ({name})"
    for match in _PROMISES.finditer(text):
        if match.group(0).lower() not in grounding:
            return f"promises something the knowledge base does not ({match.group(0)})"
    if _INTERNALS.search(text):
        return "reveals internals"
    for url in _URL.findall(text):
        if url.rstrip(".,") not in grounding:
            return "links a page that was not retrieved"
    if channel == C.CHANNEL_WHATSAPP and len(text) > compose.WHATSAPP_MAX_CHARS:
        return "too long for WhatsApp"
    if channel == C.CHANNEL_EMAIL and compose.word_count(text) > compose.EMAIL_MAX_WORDS:
        return "too long for email"
    if channel == C.CHANNEL_WEB_FORM and compose.word_count(text) > compose.WEB_MAX_WORDS:
        return "too long for the web form"
    return ""


class Reasoner:
    def __init__(
        self,
        engine: Engine,
        offline: Engine,
        *,
        policy: policy.Policy,
        packs: dict[str, Pack],
        playbook: Playbook,
    ) -> None:
        self.engine = engine
        self.offline = offline
        self.policy = policy
        self.packs = packs
        self.playbook = playbook

    def voice(self, language: str) -> Voice:
        return Voice(self.packs.get(language) or self.packs["en"], self.playbook)

    async def assess(self, text: str, subject: str) -> policy.Assessment:
        return await self.policy.assess(text, subject)

    async def decide(self, tools: Toolbox, assessment: policy.Assessment, *, waiting_for_person: bool) -> Decision:
        req = tools.request
        voice = self.voice(assessment.language)
        base: dict[str, Any] = {
            "language": assessment.language,
            "sentiment": assessment.sentiment,
            "category": assessment.category,
            "priority": assessment.priority,
            "injection": assessment.injection,
            "intent": assessment.intent,
            "evidence": assessment.evidence,
        }
        if waiting_for_person and not assessment.must_escalate:
            return Decision(
                action=Action.ACKNOWLEDGE,
                reply_text=compose.follow_up_ack(req.channel, req.ticket_id, req.display_name, voice),
                engine="policy",
                **base,
            )
        if assessment.must_escalate:
            return self._escalate(tools, assessment.escalation_reason, assessment.escalation_detail, "policy", base)
        if assessment.intent in _CONVERSATIONAL:
            action, key = _CONVERSATIONAL[assessment.intent]
            return Decision(
                action=action,
                reply_text=compose.conversational(req.channel, key, req.ticket_id, req.display_name, voice),
                engine="policy",
                **base,
            )
        outcome, engine_name, guardrail = await self._run_engine(tools, assessment)
        if outcome.category:
            base["category"] = outcome.category
        if outcome.priority:
            base["priority"] = max(outcome.priority, assessment.priority)
        searches = [asdict(s) for s in outcome.searches]
        if outcome.escalation_reason or not outcome.reply_text:
            reason = outcome.escalation_reason or C.ESCALATION_REASON_NO_ANSWER_FOUND
            detail = outcome.escalation_detail or "No answer was produced."
            decision = self._escalate(tools, reason, detail, engine_name, base, lead=outcome.escalation_lead)
            decision.searches = searches
            decision.guardrail = guardrail
            return decision
        cited = outcome.cited[0] if outcome.cited else None
        return Decision(
            action=Action.ANSWER,
            reply_text=outcome.reply_text,
            engine=engine_name,
            article=cited.slug if cited else "",
            article_url=cited.url if cited else "",
            searches=searches,
            guardrail=guardrail,
            **base,
        )

    async def _run_engine(self, tools: Toolbox, assessment: policy.Assessment) -> tuple[Outcome, str, str]:
        """The configured engine's outcome, its name, and why the offline engine took over ("" when
        it did not): a failing engine or a reply the guardrail refuses falls back to offline."""
        req = tools.request
        engine_name = self.engine.name
        guardrail = ""
        try:
            await self.engine.run(tools, assessment)
        except Exception as exc:  # an unreachable model must not stop the answers: offline takes over
            if self.engine is self.offline:
                raise
            log.warning("engine failed; the offline engine answers", extra={"engine": engine_name, "error": repr(exc)})
            guardrail = f"engine failed: {type(exc).__name__}"
        outcome = tools.outcome
        if not guardrail and self.engine is not self.offline and not outcome.escalation_reason:
            guardrail = check_reply(outcome.reply_text or "", outcome, req.channel, self.playbook.competitors)
        if guardrail:
            tools.outcome = Outcome(searches=outcome.searches)
            await self.offline.run(tools, assessment)
            outcome = tools.outcome
            engine_name = f"{engine_name}+offline"
        return outcome, engine_name, guardrail

    async def draft(self, tools: Toolbox, assessment: policy.Assessment) -> Draft | None:
        """A reply for a person to edit and send (a suggested reply): the engine's grounded answer
        to the message, whatever the policy would decide about sending one itself; None when the
        engine found nothing to answer with."""
        outcome, engine_name, _ = await self._run_engine(tools, assessment)
        if outcome.escalation_reason or not outcome.reply_text or not outcome.cited:
            return None
        cited = outcome.cited[0]
        return Draft(text=outcome.reply_text, article=cited.article, article_url=cited.url, engine=engine_name)

    def _escalate(
        self, tools: Toolbox, reason: int, detail: str, engine: str, base: dict[str, Any], *, lead: str = ""
    ) -> Decision:
        req = tools.request
        follow_up_by = datetime.now(UTC) + timedelta(hours=self.playbook.follow_up_hours)
        follow_up_by = follow_up_by.replace(second=0, microsecond=0)
        registered = reasons.by_value(reason)
        base = {**base, "priority": max(base["priority"], registered.priority)}
        return Decision(
            action=Action.ESCALATE,
            reply_text=compose.escalation(
                req.channel,
                registered.name,
                req.ticket_id,
                follow_up_by,
                display_name=req.display_name,
                voice=self.voice(base["language"]),
                lead=lead,
            ),
            engine=engine,
            escalation_reason=reason,
            escalation_detail=detail,
            follow_up_by=follow_up_by.isoformat(),
            **base,
        )
