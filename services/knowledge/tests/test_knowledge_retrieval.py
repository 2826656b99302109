"""The labeled retrieval sets against the sample knowledge base, loaded the way `make run` loads
it, searched through gRPC with the offline models.

- retrieval_set.jsonl: the tuning set (weights and rules were chosen on it).
- retrieval_heldout.jsonl: never looked at question by question while tuning; scored here.
- retrieval_translations.jsonl: every question of both in Spanish and German, expected to find
  the same article; compared with the English figure of the same questions.
- section_set.jsonl: (question, article, section heading); "dev" rows were used while tuning.

The issue's targets are printed as met or not; the asserted floors keep what this version reaches.

Each table shows the search before this version (measured on the same sets, recorded in
retrieval_baseline.json) next to the current figures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_knowledge.reembed import embed_views
from fte_knowledge.server import Knowledge
from fte_knowledge.sources import read_source
from fte_stack.services import SERVICES, StackInfo
from knowledge_helpers import Client, Stub, run_cli  # type: ignore[import-not-found]

DATA = Path(__file__).resolve().parent / "data"
# The targets of the issue (printed with each table, met or not) ...
TARGETS = {"held-out top-1": 0.90, "held-out top-3": 0.97, "section": 0.90, "cross-lingual top-3 / English": 0.90}
# ... and what this version must keep (asserted): well above the search before it on every set,
# a few questions below what it reaches, so a change that loses ground fails.
HELDOUT_TOP1_FLOOR = 0.76
HELDOUT_TOP3_FLOOR = 0.94
SECTION_FLOOR = 0.85
CROSS_LINGUAL_FLOOR = 0.82


def rows(name: str) -> list[dict[str, Any]]:
    text = (DATA / name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class Score:
    n: int = 0
    top1: int = 0
    top3: int = 0
    rr: float = 0.0

    def add(self, rank: int | None) -> None:
        self.n += 1
        self.top1 += rank == 0
        self.top3 += rank is not None and rank < 3
        self.rr += 1 / (rank + 1) if rank is not None else 0.0

    @property
    def rates(self) -> tuple[float, float, float]:
        n = self.n or 1
        return self.top1 / n, self.top3 / n, self.rr / n


# Articles that translate each other (same category and tags, other languages), e.g. the German
# "Passwort zurücksetzen" and the English "Reset your password": for a question in German, the
# German article is as right as the English one the label names (and better for the customer).
TRANSLATED_BY: dict[str, dict[str, str]] = {}  # slug -> {language: slug of its translation}


def learn_translations(articles: Sequence[Any]) -> None:
    groups: dict[tuple[str, frozenset[str]], list[Any]] = {}
    for a in articles:
        groups.setdefault((a.category, frozenset(a.tags)), []).append(a)
    for group in groups.values():
        for a in group:
            TRANSLATED_BY[a.slug] = {b.language: b.slug for b in group if b.language != a.language}


async def rank_of(stub: Stub, question: str, slug: str) -> tuple[int | None, ks.SearchKnowledgeResponse]:
    response = await stub.SearchKnowledge(ks.SearchKnowledgeRequest(query=question, top_k=3))
    found = [r.article.removeprefix("articles/") for r in response.results]
    right = {slug, TRANSLATED_BY.get(slug, {}).get(response.query_language, slug)}
    return next((i for i, f in enumerate(found) if f in right), None), response


def table(title: str, lines: Sequence[tuple[str, int, tuple[float, ...], tuple[float, ...] | None]]) -> str:
    out = [f"\n{title}", f"  {'set':28s} {'n':>4s}   {'before: top-1 top-3  MRR':26s}   after: top-1 top-3  MRR"]
    for name, n, after, before in lines:
        was = "  ".join(f"{v:.3f}" for v in before) if before else "-"
        out.append(f"  {name:28s} {n:4d}   {was:26s}   {'  '.join(f'{v:.3f}' for v in after)}")
    return "\n".join(out)


async def test_retrieval_and_sections(
    knowledge: Knowledge, client_for: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = knowledge.settings.database_url.get_secret_value()
    spec = next(s for s in SERVICES if s.name == "knowledge")
    info = StackInfo(tmp_path, dsn, "", False, "", {}, {})
    (command,) = spec.after_start(info)
    assert command[0] == sys.executable
    code, out, err = await run_cli(dsn, *command)
    assert code == 0, err
    assert out.startswith("created ")
    # A second start skips every unchanged article.
    code, again, _ = await run_cli(dsn, *command)
    assert code == 0
    articles, _ = read_source(Path(command[4]))
    assert again.strip() == f"created 0, updated 0, unchanged {len(articles)}, rejected 0"
    learn_translations(articles)
    # The cross-lingual vectors the background task would add after the import, now.
    assert await embed_views(knowledge.kb) > 0

    baseline: dict[str, list[float]] = json.loads((DATA / "retrieval_baseline.json").read_text(encoding="utf-8"))
    agent = client_for("agent")
    tuning, heldout = rows("retrieval_set.jsonl"), rows("retrieval_heldout.jsonl")
    assert len(tuning) >= 100
    assert len(heldout) >= 70

    scores: dict[str, Score] = {}
    english_rank: dict[tuple[str, int], int | None] = {}
    tuning_misses: list[str] = []
    for source, cases in (("set", tuning), ("heldout", heldout)):
        name = "tuning" if source == "set" else "held-out"
        for index, case in enumerate(cases):
            rank, response = await rank_of(agent, case["question"], case["slug"])
            scores.setdefault(name, Score()).add(rank)
            if source == "heldout":
                scores.setdefault(f"held-out: {case['kind']}", Score()).add(rank)
            english_rank[(source, index)] = rank
            if source == "set" and rank != 0:  # only the tuning set's misses are shown
                found = [r.article.removeprefix("articles/") for r in response.results]
                tuning_misses.append(f"  {case['question'][:90]!r}: expected {case['slug']}, got {found}")

    translated = rows("retrieval_translations.jsonl")
    for case in translated:
        rank, _ = await rank_of(agent, case["question"], case["slug"])
        source = "tuning" if case["source"] == "set" else "held-out"
        scores.setdefault(f"{source} in {case['language']}", Score()).add(rank)
        scores.setdefault(f"{source} in en (same questions)", Score()).add(
            english_rank[(case["source"], case["index"])]
        )

    # Section choice: the section the search names for the expected article (among the top 10),
    # and, stricter, the top result being that article and section.
    sections: dict[str, Score] = {}
    section_misses: list[str] = []
    for case in rows("section_set.jsonl"):
        response = await agent.SearchKnowledge(ks.SearchKnowledgeRequest(query=case["question"], top_k=10))
        name = f"articles/{case['slug']}"
        mine = next((r for r in response.results if r.article == name), None)
        right = mine is not None and mine.section_heading.strip().lower() == case["section"].strip().lower()
        top = response.results[0] if response.results else None
        sections.setdefault(f"section {case['split']}", Score()).add(0 if right else None)
        sections.setdefault(f"section {case['split']}, top result", Score()).add(0 if right and top is mine else None)
        if not right and case["split"] == "dev":
            got = f"{mine.article}#{mine.section_heading}" if mine else "not in the top 10"
            section_misses.append(f"  {case['question'][:90]!r}: expected {case['slug']}#{case['section']}, got {got}")

    lines = [(name, s.n, s.rates, tuple(baseline[name]) if name in baseline else None) for name, s in scores.items()]
    section_lines = [
        (name, s.n, s.rates[:1], tuple(baseline[name][:1]) if name in baseline else None)
        for name, s in sections.items()
    ]
    top1, top3, _ = scores["held-out"].rates
    ratios = {
        f"{source} in {language}": scores[f"{source} in {language}"].rates[1]
        / scores[f"{source} in en (same questions)"].rates[1]
        for source in ("tuning", "held-out")
        for language in ("es", "de")
    }
    reached = {
        "held-out top-1": top1,
        "held-out top-3": top3,
        "section": min(sections["section dev"].rates[0], sections["section heldout"].rates[0]),
        "cross-lingual top-3 / English": min(ratios.values()),
    }
    with capsys.disabled():  # the figures are the point of this test: always show them
        print(table("retrieval (right article in the top 1 / top 3, MRR)", lines))
        print(table("section choice (the expected article's section; and as the top result)", section_lines))
        print("cross-lingual top-3 / English top-3: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
        print(
            "targets: "
            + ", ".join(
                f"{k} {v:.3f} ({'met' if reached[k] >= v else 'NOT met'}: {reached[k]:.3f})" for k, v in TARGETS.items()
            )
        )
        print("tuning-set misses at top 1:\n" + "\n".join(tuning_misses))
        print("dev section misses:\n" + "\n".join(section_misses))

    assert top1 >= HELDOUT_TOP1_FLOOR
    assert top3 >= HELDOUT_TOP3_FLOOR
    assert sections["section heldout"].rates[0] >= SECTION_FLOOR
    assert sections["section dev"].rates[0] >= SECTION_FLOOR
    for name, ratio in ratios.items():
        assert ratio >= CROSS_LINGUAL_FLOOR, name
