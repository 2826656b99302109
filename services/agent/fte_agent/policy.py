"""The policy: what one customer message is, and whether it must go to a person.

The learned reader (reader.py) gives the intent and tone; the language packs add a small,
high-precision rule safety net; the language decides whether the agent may answer at all. Both
engines run it first, and its escalation verdict always wins. Every verdict carries its evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fte.common.v1 import common_pb2
from fte_runtime.embeddings import Vector
from fte_runtime.enums import value_names

from fte_agent import reader, reasons, text
from fte_agent.language import LanguageDetection
from fte_agent.packs import Pack

R = common_pb2

# Ticket category name ("billing") -> its enum value: what a pack's `[categories]` table names.
CATEGORIES = {name: number for number, name in value_names(R.Category).items()}


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the policy reads in one message."""

    language: str
    sentiment: float
    category: int
    priority: int
    injection: bool
    intent: str = "question"
    escalation_reason: int = 0
    escalation_detail: str = ""
    # The text as read: the customer's own words, planted instructions removed.
    text: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    # Embeddings of `text` by model name (see `reader.Reading.vectors`).
    vectors: dict[str, Vector] = field(default_factory=dict)

    @property
    def must_escalate(self) -> bool:
        return self.escalation_reason != 0


class Policy:
    def __init__(self, supported_languages: tuple[str, ...], packs: dict[str, Pack], model: reader.Reader) -> None:
        self.supported = supported_languages
        self.packs = packs
        self.model = model
        self.languages = LanguageDetection(supported_languages)
        self.markers = tuple(p for pack in packs.values() for p in pack.injection)

    async def assess(self, body: str, subject: str = "") -> Assessment:
        clean, injected = text.readable(body, subject, self.markers)
        if not any(c.isalnum() for c in clean):
            # No words: "?" or a thumbs-up still says something (the packs' intent rules), the rest is empty.
            ruled = self._intent_rule(clean, self.languages.default)
            intent, why = ruled if ruled is not None else ("empty", "no text")
            return Assessment(
                language=self.languages.default, sentiment=0.0, category=R.CATEGORY_GENERAL, priority=R.PRIORITY_LOW,
                injection=injected, intent=intent, text=clean,
                evidence={"intent": intent, "score": 1.0, "rule": why, "injection": injected},
            )  # fmt: skip
        language, confidence = self.languages.detect(clean)
        evidence: dict[str, Any] = {
            "language": language,
            "language_confidence": round(confidence, 3),
            "injection": injected,
            "rule": "",
        }
        reason: reasons.Reason | None = None
        if language not in self.supported:
            # Nothing else is read: a person answers, whatever the message says.
            reason = reasons.by_name("unsupported_language")
            evidence["rule"] = f"language {language} not supported"
            return Assessment(
                language=language, sentiment=0.0, category=R.CATEGORY_GENERAL, priority=reason.priority,
                injection=injected, intent="question", escalation_reason=reason.value,
                escalation_detail=reason.detail, text=clean, evidence=evidence,
            )  # fmt: skip
        reading = await self.model.read(clean, language)
        evidence.update(
            intent=reading.intent,
            score=round(reading.score, 3),
            ranked=[[label, round(p, 3)] for label, p in reading.ranked],
            tone=reading.tone,
            stage=reading.stage,
        )
        rule = self._rule(clean, language, reading)
        ruled_intent = self._intent_rule(clean, language) if rule is None else None
        if rule is not None:
            reason, evidence["rule"] = rule
        elif ruled_intent is not None:
            evidence["rule"] = ruled_intent[1]
        elif reading.intent in reasons.learned():
            reason = reasons.by_name(reading.intent)
        if reason is not None and reason.learned:
            intent = reason.name
        else:
            intent = ruled_intent[0] if ruled_intent is not None else reading.intent
        if intent != reading.intent:
            evidence["intent"] = intent
        category = self._category(clean, language)
        priority = reason.priority if reason is not None else R.PRIORITY_LOW
        return Assessment(
            language=language,
            sentiment=round(reading.sentiment, 3),
            category=category,
            priority=priority,
            injection=injected,
            intent=intent,
            escalation_reason=reason.value if reason is not None else 0,
            escalation_detail=reason.detail if reason is not None else "",
            text=clean,
            evidence=evidence,
            vectors=reading.vectors,
        )

    def _packs(self, language: str) -> list[Pack]:
        """The message's language pack, then English (customers mix English words in)."""
        return [self.packs[code] for code in dict.fromkeys((language, "en")) if code in self.packs]

    def _category(self, clean: str, language: str) -> int:
        """The first category, in the pack's order, whose words the message uses; else general."""
        for pack in self._packs(language):
            for name, patterns in pack.categories.items():
                if any(p.search(clean) for p in patterns):
                    return CATEGORIES[name]
        return R.CATEGORY_GENERAL

    def _rule(self, clean: str, language: str, reading: reader.Reading) -> tuple[reasons.Reason, str] | None:
        """The safety net: the reasons whose rules match, in the message's language and in English
        (customers mix English words into other languages). When several match ("refund me or my
        lawyer hears of it"), the one the reader ranks highest; else the first in registry order."""
        matched: list[tuple[reasons.Reason, str]] = []
        packs = self._packs(language)
        for reason in reasons.registry():
            hit = next(
                (
                    f"{pack.code}:{reason.name}[{i}]"
                    for pack in packs
                    for i, pattern in enumerate(pack.rules.get(reason.name, ()))
                    if pattern.search(clean)
                ),
                None,
            )
            if hit is not None:
                matched.append((reason, hit))
        if not matched:
            return None
        rank = {label: n for n, (label, _) in enumerate(reading.ranked)}
        return min(matched, key=lambda m: rank.get(m[0].name, len(rank)))

    def _intent_rule(self, clean: str, language: str) -> tuple[str, str] | None:
        """The intent a whole message settles by the packs' `[intents]` rules (only thanks, only
        a greeting, only question marks), in the message's language and in English."""
        for pack in self._packs(language):
            for intent, patterns in pack.intents.items():
                for i, pattern in enumerate(patterns):
                    if pattern.search(clean):
                        return intent, f"{pack.code}:intents.{intent}[{i}]"
        return None
