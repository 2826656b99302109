"""Query understanding: what of a customer's message is the question, in which language, and
with which of the knowledge base's own words.

- Greetings, sign-offs (and the signature after them) and filler are removed; the rest is
  embedded and ranked. If nothing is left, the message is used as written.
- Customer words are mapped to the help centre's words (`data/query_rules.json`), and a mapping
  is used only when the knowledge base itself uses the words (its titles, headings and tags):
  the expansion feeds the full-text ranker only, never the embedding, so it can add evidence but
  not change what the question means.
- Codes and numbers (words with a digit: "TL-4091", "429") are kept as written; the store
  ranks chunks holding them all first on the full-text side, which is one of two rankings.
- The language is the caller's when given, else the one whose common words the question uses
  most ("en" when it uses none).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_SIGNATURE_RULE = re.compile(r"^\s*(--|__|—)\s*$")
# Question parts: sentences, and clauses joined by "and also" / "also" / "plus" / ";".
_PARTS = re.compile(r"(?<=[?!.;])\s+|\s+(?:and also|and then|also|plus|as well as|additionally)\s+", re.I)
_MIN_PART_WORDS = 3


@dataclass(frozen=True, slots=True)
class Rules:
    greetings: tuple[str, ...]
    closings: tuple[str, ...]
    filler: tuple[str, ...]
    synonyms: dict[str, str]
    stopwords: dict[str, frozenset[str]]
    _patterns: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def pattern(self, kind: str) -> re.Pattern[str]:
        if kind not in self._patterns:
            phrases = sorted(getattr(self, kind), key=len, reverse=True)
            alternatives = "|".join(re.escape(p) for p in phrases)
            self._patterns[kind] = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])[\s,.!:;]*", re.I)
        return self._patterns[kind]


@lru_cache(maxsize=1)
def rules() -> Rules:
    data: dict[str, Any] = json.loads(
        files("fte_knowledge").joinpath("data/query_rules.json").read_text(encoding="utf-8")
    )
    return Rules(
        greetings=tuple(data["greetings"]),
        closings=tuple(data["closings"]),
        filler=tuple(data["filler"]),
        synonyms={k.lower(): v.lower() for k, v in data["synonyms"].items()},
        stopwords={lang: frozenset(words) for lang, words in data["stopwords"].items()},
    )


def words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The words of the knowledge base's titles, headings and tags."""
    return frozenset(w for t in texts for w in words(t.replace("-", " ")))


def strip_noise(message: str, r: Rules | None = None) -> str:
    """The question without greetings, sign-offs (and the signature after them) and filler."""
    r = r or rules()
    lines = message.splitlines()
    kept: list[str] = []
    closing = r.pattern("closings")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _SIGNATURE_RULE.match(stripped):
            break
        # A line that is only a sign-off ends the message (a name or a signature follows).
        if i > 0 and stripped and not closing.sub("", stripped).strip(" ,.!-"):
            break
        kept.append(line)
    # A greeting opens a line (the message's first, or the first after a subject line).
    greeting = r.pattern("greetings")
    for i, line in enumerate(kept):
        rest = line.strip()
        while (match := greeting.match(rest)) is not None and match.end() > 0:
            rest = rest[match.end() :]
        kept[i] = rest
    text = " ".join(kept)
    # A sign-off at the end, with the name after it ("... Cheers, Tom"); filler anywhere.
    phrases = "|".join(re.escape(p) for p in sorted(r.closings, key=len, reverse=True))
    text = re.sub(
        rf"(?<![\w-])(?i:{phrases})(?![\w-])[\s,.!]*(?:[A-Z][\w.'-]*(?:\s+[A-Z][\w.'-]*){{0,2}})?[\s.!]*$",
        " ",
        text,
    )
    text = r.pattern("filler").sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip(" ,;:-")
    return text if len(words(text)) >= 1 else re.sub(r"\s+", " ", message).strip()


def detect_language(text: str, r: Rules | None = None) -> str:
    r = r or rules()
    found = words(text)
    best, best_hits = "en", 0
    for language, common in r.stopwords.items():
        hits = sum(w in common for w in found)
        if hits > best_hits or (hits == best_hits and language == "en"):
            best, best_hits = language, hits
    return best


def expansions(question: str, kb_words: frozenset[str], r: Rules | None = None) -> list[str]:
    """The help centre's words for the customer's words of `question`, when the knowledge base
    uses them (all of them when `kb_words` is empty, before the vocabulary is known)."""
    r = r or rules()
    lowered = " ".join(words(question))
    out: list[str] = []
    for phrase, replacement in r.synonyms.items():
        if re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", lowered):
            for w in words(replacement.replace("-", " ")):
                if (not kb_words or w in kb_words) and w not in out:
                    out.append(w)
    return out


def question_parts(question: str) -> list[str]:
    """The separate questions of a message with several ("How do I X? And can I Y?")."""
    parts = [p.strip(" ,;") for p in _PARTS.split(question) if p and p.strip(" ,;")]
    parts = [p for p in parts if len(words(p)) >= _MIN_PART_WORDS]
    return parts if len(parts) > 1 else [question]


@dataclass(frozen=True, slots=True)
class Understood:
    text: str  # what is embedded: the question without noise
    language: str  # BCP 47 primary language of the question
    extra_words: tuple[str, ...]  # knowledge-base words added to the full-text side
    parts: tuple[str, ...]  # the separate questions, or just `text`
    exact: tuple[str, ...] = ()  # codes and quoted phrases, lower case, to be found as written


def understand(message: str, *, language: str = "", kb_words: frozenset[str] = frozenset()) -> Understood:
    r = rules()
    text = strip_noise(message, r)
    lang = language.split("-", maxsplit=1)[0].lower() if language else detect_language(text, r)
    return Understood(
        text=text,
        language=lang,
        extra_words=tuple(expansions(text, kb_words, r)) if lang == "en" else (),
        parts=tuple(question_parts(text)),
        exact=tuple(exact_terms(text)),
    )


_QUOTED = re.compile(r"[\"“”«»„]([^\"“”«»„]{3,80})[\"“”«»„]")
_CODE = re.compile(r"(?<![\w-])[A-Za-z]*[-_]?\d[\w-]*(?![\w-])")


def exact_terms(text: str) -> list[str]:
    """Quoted phrases and words holding a digit ("TL-4093", "429", "X-RateLimit-Remaining" is not
    one), which a section must contain as written to be the one the question names."""
    found = [m.group(1).strip().lower() for m in _QUOTED.finditer(text)]
    found += [m.group(0).lower() for m in _CODE.finditer(text)]
    return list(dict.fromkeys(f for f in found if f))
