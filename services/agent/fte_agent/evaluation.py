"""Scores of the reader (policy + learned model) on labeled sets: the frozen dev set, the
paraphrase set, its translations, and k-fold cross-validation of the training corpus.

Run with `make eval`. The sets under tests/data are never used for training or tuning."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from fte_agent import reader, reasons
from fte_agent.policy import Assessment, Policy

ESCALATIONS = (*reasons.learned(), "unsupported_language")


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    text: str
    subject: str
    expected: str  # an escalation reason name or a non-escalation intent
    language: str = "en"
    source: str = ""


@dataclass
class Score:
    """Agreement on one set: escalation decision, reason among escalations, intent among the rest."""

    name: str
    rows: list[tuple[Case, str]] = field(default_factory=list)

    def add(self, case: Case, got: str) -> None:
        self.rows.append((case, got))

    @property
    def decision(self) -> float:
        ok = sum((c.expected in ESCALATIONS) == (g in ESCALATIONS) for c, g in self.rows)
        return ok / max(1, len(self.rows))

    @property
    def reason(self) -> float:
        esc = [(c, g) for c, g in self.rows if c.expected in ESCALATIONS]
        return sum(c.expected == g for c, g in esc) / max(1, len(esc))

    @property
    def intents(self) -> float:
        rest = [(c, g) for c, g in self.rows if c.expected not in ESCALATIONS]
        return sum(c.expected == g for c, g in rest) / max(1, len(rest))

    def per_label(self) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for c, g in self.rows:
            out[c.expected][1] += 1
            out[c.expected][0] += c.expected == g
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def confusion(self) -> Counter[tuple[str, str]]:
        return Counter((c.expected, g) for c, g in self.rows if c.expected != g)

    def misses(self) -> list[str]:
        return [f"{c.id}: expected {c.expected}, got {g}: {c.text[:70]!r}" for c, g in self.rows if c.expected != g]

    def report(self) -> str:
        lines = [
            f"{self.name}: {len(self.rows)} messages",
            f"  escalation decision {self.decision:.1%}   reason {self.reason:.1%}   other intents {self.intents:.1%}",
            "  per label (right/total): " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in self.per_label().items()),
        ]
        confusion = self.confusion()
        if confusion:
            lines.append("  confusions (expected -> got: n): " + ", ".join(
                f"{e}->{g}: {n}" for (e, g), n in confusion.most_common(12)
            ))  # fmt: skip
        return "\n".join(lines)


def _expected(expect: dict[str, Any]) -> str:
    """A dev-set or paraphrase-set expectation as the reader's label."""
    if "intent" in expect:
        return str(expect["intent"])
    if expect.get("action") == "answer":
        return "question"
    reason = str(expect.get("reason", ""))
    return "question" if reason == "no_answer_found" else reason


def load_cases(path: Path) -> list[Case]:
    cases = []
    for line in path.read_text("utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        cases.append(
            Case(
                id=row["id"],
                text=row.get("text", ""),
                subject=row.get("subject", ""),
                expected=_expected(row["expect"]),
                language=row.get("language", "en"),
                source=row.get("source") or "",
            )
        )
    return cases


def got_label(a: Assessment) -> str:
    return reasons.name_of(a.escalation_reason) if a.must_escalate else a.intent


async def score(policy: Policy, name: str, cases: Sequence[Case]) -> Score:
    result = Score(name)
    for case in cases:
        result.add(case, got_label(await policy.assess(case.text, case.subject)))
    return result


def cross_validate(corpus: str, cache_dir: Path | None, folds: int = 5) -> Score:
    """k-fold cross-validation of both reader stages, as the reader combines them, on the corpus."""
    examples = reader.parse_corpus(corpus)
    texts = [e.text for e in examples]
    fast = reader.cached_vectors(cache_dir, reader.shared_minilm().model, texts, reader.shared_minilm().embed_sync)
    deep = reader.cached_vectors(cache_dir, reader.shared_e5().model, texts, reader.shared_e5().query_sync)
    labels = np.array([e.label for e in examples])
    result = Score(f"corpus {folds}-fold cross-validation")
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=7).split(labels, labels):
        models = [
            reader.Model(
                [texts[i] for i in train],
                [vectors[i] for i in train],
                [examples[i].label for i in train],
                [examples[i].tone for i in train],
                weight=weight,
                stage=stage,
            )
            for vectors, weight, stage in ((fast, reader.FAST_WEIGHT, "fast"), (deep, reader.DEEP_WEIGHT, "deep"))
        ]
        for i in test:
            got = models[0].read(texts[i], fast[i])
            if examples[i].language != "en" or got.score < reader.FAST_CONFIDENCE:
                got = models[1].read(texts[i], deep[i])
            result.add(Case(f"c{i}", texts[i], "", examples[i].label, examples[i].language), got.intent)
    return result
