"""The second stage of search: candidate articles re-ranked on question-vs-section similarity,
and the section of each article that answers the question.

The hybrid statement gives each candidate article its best fused chunk score (first stage:
vector + full text, fused by reciprocal rank). Here every section of a candidate is scored
against the question with the vectors stored at import (each chunk is embedded with its heading
path "Title > Section", so the title and the heading weigh in every chunk's vector; a section
scores as its best chunk), and the article's score combines the two stages. Nothing is embedded
here but the question (and its parts when it asks several things): the section vectors exist
already, so this costs a few dot products per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fte_knowledge.chunking import sections
from fte_knowledge.query import rules, words

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Section:
    path: str  # "Title > Section > Subsection", as in the chunks' headings
    heading: str  # the last part of the path; "" for the introduction before the first heading
    text: str  # the whole section: its paragraphs and lists, steps whole


@dataclass(frozen=True, slots=True)
class Candidate:
    """One article of the first stage, with its sections and their chunk vectors."""

    slug: str
    title: str
    language: str
    fused: float  # the best fused score of its chunks, in [0, 1]
    sections: list[Section]
    chunk_sections: list[int]  # section index of each stored chunk vector
    vectors: Matrix  # (chunks, dimension), unit rows, for the search's model
    cross_vectors: Matrix | None = None  # the same chunks' vectors of the cross-lingual model, if any


@dataclass(frozen=True, slots=True)
class Ranked:
    slug: str
    score: float  # the re-ranked score, in [0, 1]
    similarity: float  # question vs the best section, cosine
    section: Section
    coverage: float  # share of the question's parts this article answers, in [0, 1]
    cross_lingual: bool  # the article is in another language than the question


def article_sections(title: str, body: str) -> list[Section]:
    out = []
    for path, paragraphs in sections(title, body):
        last = path.rsplit(" > ", 1)[-1] if " > " in path else ""
        out.append(Section(path=path, heading=last, text="\n\n".join(paragraphs)))
    return out or [Section(path=title, heading="", text=body.strip())]


def section_index(candidate_sections: Sequence[Section], heading_path: str) -> int:
    for i, s in enumerate(candidate_sections):
        if s.path == heading_path:
            return i
    return 0


@dataclass(frozen=True, slots=True)
class Weights:
    fused: float = 3.0
    section: float = 1.0
    # The introduction (before the first heading) summarises the whole article, so it resembles
    # every question about it a little: it is chosen only when it answers clearly better.
    intro: float = 0.02
    # A section holding every code or quoted phrase of the question ("TL-4093", "User not assigned").
    exact: float = 0.08
    # Per question word (stemmed, not a stop word) found in a section's own heading.
    heading_word: float = 0.12
    language: float = 0.03  # an article in the question's language over a translation of it
    cross: float = 1.0  # the cross-lingual model's section similarity, for questions not in English
    cross_fused: float = 0.0  # the fused score's weight next to it
    # The multilingual model rates any passage in the question's own language higher, whatever
    # its topic: that much is taken off those articles' similarity (measured on the tuning set).
    cross_same_language: float = 0.08
    cross_same_fused: float = 0.05  # the fused score's weight for articles in the question's language
    part_floor: float = 0.35  # a part of the question this article's best section matches less is not answered
    part_margin: float = 0.12  # ... or one matched this much less than by the best candidate
    # The second opinion for an English question the MiniLM scores leave close (the service's
    # `rerank_deep_margin`): the multilingual model's best-section similarity, next to MiniLM's.
    # e5's cosines lie in a narrow band (about 0.75-0.9), hence the large weight (chosen on the
    # tuning set: 5 and 8 tie on top-3, 8 keeps top-1; 15 loses it).
    deep: float = 8.0
    # The fused score's weight on that pass: the first stage already left these articles close.
    deep_fused: float = 0.5
    # ... and e5's similarity of each section next to MiniLM's when choosing the answering one.
    deep_section: float = 1.0


def _section_scores(sims: Matrix, chunk_sections: Sequence[int], count: int) -> Matrix:
    best = np.full(count, -1.0, dtype=np.float32)
    for row, s in enumerate(chunk_sections):
        best[s] = max(best[s], float(sims[row]))
    return best


def _stems(text: str) -> frozenset[str]:
    common = rules().stopwords.get("en", frozenset())
    out = set()
    for word in words(text):
        if word in common or len(word) < 3:
            continue
        stem = word
        for suffix in ("ation", "ing", "ed", "es", "s", "e"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                stem = word[: -len(suffix)]
                break
        out.add(stem)
    return frozenset(out)


def _section_bias(
    sections: Sequence[Section],
    exact: Sequence[str],
    weights: Weights,
    *,
    intro: bool = True,
    asked: frozenset[str] = frozenset(),
) -> Matrix:
    bias = np.zeros(len(sections), dtype=np.float32)
    for i, section in enumerate(sections):
        if asked and section.heading:  # for choosing the section only, not for ranking articles
            bias[i] += weights.heading_word * len(asked & _stems(section.heading))
        if intro and not section.heading and len(sections) > 1:
            bias[i] -= weights.intro
        if exact:
            text = f"{section.heading}\n{section.text}".lower()
            if all(e in text for e in exact):
                bias[i] += weights.exact
    return bias


def rerank(
    candidates: Sequence[Candidate],
    question: Matrix,
    *,
    language: str,
    exact: Sequence[str] = (),
    question_text: str = "",
    parts: Matrix | None = None,
    cross_question: Matrix | None = None,
    deep_question: Matrix | None = None,
    weights: Weights = Weights(),
) -> list[Ranked]:
    """Candidates best first. `question` is the unit query vector of the search's model;
    `parts` one row per separate question when it asks several; `cross_question` the question
    in the cross-lingual model, when it is not in English; `deep_question` the same for an
    English question whose MiniLM scores were too close to call (weighed by `weights.deep`)."""
    if not candidates:
        return []
    asked = _stems(question_text) if weights.heading_word else frozenset()
    # The most a candidate can score on this path, so that scores lie in [0, 1].
    deep = weights.deep if deep_question is not None and cross_question is None else 0.0
    most_fused = weights.fused if cross_question is None else max(weights.cross_fused, weights.cross_same_fused)
    if deep:
        most_fused = weights.deep_fused
    scale = most_fused + weights.section + weights.language + deep
    scored: list[tuple[float, float, int, Candidate, bool]] = []
    part_best: list[Matrix] = []
    for cand in candidates:
        per_section = _section_scores(cand.vectors @ question, cand.chunk_sections, len(cand.sections)) + _section_bias(
            cand.sections, exact, weights
        )
        choice = per_section + _section_bias(cand.sections, (), weights, intro=False, asked=asked)
        score_by_section = per_section
        cross = False
        if cross_question is not None and cand.cross_vectors is not None:
            # A question not in English is matched in the multilingual model's space, every
            # candidate alike, so that their scores compare.
            score_by_section = weights.cross * _section_scores(
                cand.cross_vectors @ cross_question, cand.chunk_sections, len(cand.sections)
            ) + _section_bias(cand.sections, exact, weights, intro=False)
            choice = score_by_section
            cross = cand.language != language
            if not cross:
                score_by_section = score_by_section - weights.cross_same_language
        best = int(np.argmax(choice))
        similarity = float(score_by_section.max())
        # The full-text side reads the question's language: across languages it is noise.
        fused_weight = (
            weights.cross_fused if cross_question is not None and cand.language != language else weights.fused
        )
        if cross_question is not None and cand.language == language:
            fused_weight = weights.cross_same_fused
        if deep:
            fused_weight = weights.deep_fused
        value = fused_weight * cand.fused + weights.section * similarity
        if deep and deep_question is not None and cand.cross_vectors is not None:
            deep_sections = _section_scores(cand.cross_vectors @ deep_question, cand.chunk_sections, len(cand.sections))
            value += deep * float(deep_sections.max())
            best = int(np.argmax(choice + weights.deep_section * deep_sections))
        if cand.language == language:
            value += weights.language
        value /= scale  # in [0, 1]
        scored.append((value, similarity, best, cand, cross))
        if parts is not None:
            part_best.append(np.max(cand.vectors @ parts.T, axis=0))
    overall = np.max(np.stack(part_best), axis=0) if part_best else None
    out: list[Ranked] = []
    for i, (value, similarity, best, cand, cross) in enumerate(scored):
        coverage = 1.0
        if overall is not None:
            mine = part_best[i]
            answered = (mine >= weights.part_floor) & (mine >= overall - weights.part_margin)
            coverage = float(answered.mean())
        score = min(1.0, max(0.0, value))
        out.append(Ranked(cand.slug, round(score, 6), similarity, cand.sections[best], coverage, cross))
    order = sorted(range(len(out)), key=lambda i: (-scored[i][0], out[i].slug))
    return [out[i] for i in order]
