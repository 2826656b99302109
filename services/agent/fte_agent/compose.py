"""Replies in each channel's style, composed only from retrieved passages and fixed templates.

Email: greeting, body, link, signature, at most 500 words. WhatsApp: short and plain (aim for
300 characters, never over 1600). Web form: at most 300 words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from fte.common.v1 import common_pb2

from fte_agent.packs import Pack, Playbook

C = common_pb2

WHATSAPP_TARGET_CHARS = 300
WHATSAPP_MAX_CHARS = 1600
EMAIL_MAX_WORDS = 500
WEB_MAX_WORDS = 300

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "to",
        "of",
        "in",
        "on",
        "for",
        "with",
        "at",
        "by",
        "from",
        "it",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "my",
        "your",
        "our",
        "their",
        "me",
        "us",
        "how",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "what",
        "why",
        "when",
        "where",
        "which",
        "who",
        "there",
        "here",
        "have",
        "has",
        "had",
        "not",
        "no",
        "yes",
        "please",
        "hi",
        "hello",
        "hey",
        "thanks",
        "thank",
        "just",
        "get",
        "got",
        "any",
        "some",
        "all",
        "so",
        "if",
        "then",
        "than",
        "also",
        "very",
        "really",
        "about",
        "into",
        "out",
        "up",
        "down",
        "i'm",
        "it's",
        "don't",
        "can't",
        "cannot",
        "am",
        "its",
        "tasklane",
        "help",
        "need",
        "want",
        "know",
    ]
)
_WORD = re.compile(r"[a-z0-9äöüßáéíóúñç]+")


def keywords(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def _stem(word: str) -> str:
    """A crude English stem: enough for "invite"/"invitation", "imports"/"import"."""
    for suffix in ("ation", "ing", "ed", "es", "s", "e"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved knowledge-base passage."""

    article: str  # "articles/{slug}"
    title: str
    url: str
    heading: str
    text: str
    score: float
    # Cosine similarity of question and passage: the absolute relevance signal (the fused
    # score ranks results against each other only).
    similarity: float = 0.0
    # The passage answers only part of the question / is in another language than the question.
    partial: bool = False
    translated: bool = False
    # The article's section that answers the question, as the search chose it (whole, steps
    # whole; heading "" for the introduction), its similarity to the question, and the article's
    # language.
    section_heading: str = ""
    section_text: str = ""
    section_similarity: float = 0.0
    language: str = ""

    @property
    def slug(self) -> str:
        return self.article.rsplit("/", 1)[-1]


def _clean(line: str) -> str:
    line = re.sub(r"\*\*(.+?)\*\*", r"\1", line)
    line = re.sub(r"`([^`]+)`", r"\1", line)
    line = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", line)
    return line.strip()


def _blocks(text: str) -> list[str]:
    """Paragraphs and list items of a markdown passage, cleaned, headings dropped."""
    blocks: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if current:
                blocks.append(" ".join(current))
                current = []
            continue
        if re.match(r"^([-*+]|\d+[.)])\s+", stripped):
            if current:
                blocks.append(" ".join(current))
            current = [stripped]
        elif current and raw.startswith((" ", "\t")):
            current.append(stripped)
        else:
            if current and re.match(r"^([-*+]|\d+[.)])\s+", current[0]):
                blocks.append(" ".join(current))
                current = []
            current.append(stripped)
    if current:
        blocks.append(" ".join(current))
    return [_clean(b) for b in blocks if _clean(b)]


def select_passage(passage: Passage, question: str, max_chars: int) -> str:
    """The blocks of `passage` that best answer `question`, in their original order, within
    `max_chars`. Whole step lists are kept together when they fit."""
    # The search returns each chunk with its heading path as the first line: not part of the answer.
    labels = {passage.heading.strip(), passage.title.strip()}
    blocks = [b for b in _blocks(passage.text) if b not in labels and not _is_heading_path(b, labels)]
    if not blocks:
        return ""
    full = "\n".join(blocks)
    if len(full) <= max_chars:
        return full
    wanted = keywords(question)
    ranked = sorted(range(len(blocks)), key=lambda i: (-len(wanted & keywords(blocks[i])), i))
    chosen: set[int] = set()
    used = 0
    for i in ranked:
        cost = len(blocks[i]) + 1
        if used + cost > max_chars:
            if not chosen:
                return _truncate_sentences(blocks[i], max_chars)
            continue
        chosen.add(i)
        used += cost
        # A numbered step pulls in its neighbours: half a procedure is no answer.
        if re.match(r"^\d+[.)]", blocks[i]):
            for j in (i - 1, i + 1, i + 2):
                if (
                    0 <= j < len(blocks)
                    and j not in chosen
                    and re.match(r"^\d+[.)]", blocks[j])
                    and used + len(blocks[j]) + 1 <= max_chars
                ):
                    chosen.add(j)
                    used += len(blocks[j]) + 1
    return "\n".join(blocks[i] for i in _contiguous_steps(sorted(chosen), blocks))


def _is_heading_path(block: str, labels: set[str]) -> bool:
    return " > " in block and any(block.startswith(label) for label in labels if label)


def _contiguous_steps(chosen: list[int], blocks: list[str]) -> list[int]:
    """Drop numbered steps after a gap in the numbering: a procedure missing a step misleads."""
    out: list[int] = []
    last_step: int | None = None
    for i in chosen:
        if re.match(r"^\d+[.)]", blocks[i]):
            if last_step is not None and i != last_step + 1:
                continue
            last_step = i
        out.append(i)
    return out


def best_section(body: str, question: str, hint: str = "") -> tuple[str, str]:
    """The (heading, text) of the article section that best answers `question`: its heading
    weighs most, then its text; `hint` is the heading path of the passage the search ranked
    first. The introduction before the first subheading counts as a section too."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in body.splitlines():
        match = re.match(r"^(#{1,6})\s+(.*)$", line.strip())
        if match:
            # The title (level 1) matches every question about the article: it names no section.
            sections.append((match.group(2).strip() if len(match.group(1)) > 1 else "", []))
        else:
            sections[-1][1].append(line)
    wanted = keywords(question)
    hint_last = hint.rsplit(" > ", 1)[-1].strip().lower()

    def score(item: tuple[str, list[str]]) -> float:
        heading, lines = item
        text = "\n".join(lines)
        value: float = 3 * len(wanted & keywords(heading)) + len(wanted & keywords(text))
        if hint_last and heading and heading.lower() == hint_last:
            value += 1.5
        if re.search(r"^\s*\d+[.)]\s", text, re.M):
            value += 0.5  # steps to follow answer a "how do I" better than background
        return value if text.strip() else -1

    heading, lines = max(sections, key=score)
    return heading, "\n".join(lines).strip()


def _truncate_sentences(text: str, max_chars: int) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text)
    out = ""
    for s in sentences:
        if len(out) + len(s) + 1 > max_chars:
            break
        out = f"{out} {s}".strip()
    return out or text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def first_name(display_name: str) -> str:
    name = display_name.strip().split()[0] if display_name.strip() else ""
    # Never greet with something that looks like an address or a number.
    return name if name.isalpha() and len(name) <= 40 else ""


@dataclass(frozen=True, slots=True)
class Voice:
    """How the agent speaks in one language: the language pack's sentences and the playbook."""

    pack: Pack
    playbook: Playbook

    def say(self, key: str, **values: object) -> str:
        return self.pack.phrase(key, company=self.playbook.company, product=self.playbook.product, **values)

    def greeting(self, display_name: str) -> str:
        name = first_name(display_name)
        return self.say("hi", name=name) if name else self.say("hi_anon")

    def when(self, moment: datetime) -> str:
        return moment.strftime(self.pack.when_format)

    def frame(self, channel: int, display_name: str, body: str, *, thanks: bool = False) -> str:
        """`body` in the channel's frame: WhatsApp plain, web with a greeting, email signed."""
        if channel == C.CHANNEL_WHATSAPP:
            return limit_chars(body, WHATSAPP_MAX_CHARS)
        parts = [self.greeting(display_name)]
        if thanks:
            parts.append(self.say("thanks"))
        parts.append(body)
        if channel == C.CHANNEL_EMAIL:
            parts.append(f"{self.say('regards')}\n{self.playbook.signature}")
            return limit_words("\n\n".join(parts), EMAIL_MAX_WORDS)
        return limit_words("\n\n".join(parts), WEB_MAX_WORDS)


def answer(channel: int, passage: Passage, question: str, *, display_name: str, voice: Voice, lead: str = "") -> str:
    """A grounded answer: the passage's relevant part and a link to the article. `lead` is an
    extra first line (a follow-up's apology); an English passage for another language says so."""
    intro = [lead] if lead else []
    if passage.translated:
        intro.append(voice.say("lead_translated"))
    tail = [voice.say("partial")] if passage.partial else []
    if channel == C.CHANNEL_WHATSAPP:
        link = voice.say("more_wa", url=passage.url)
        fixed = len("\n".join([*intro, link, *tail])) + 1
        body = select_passage(passage, question, max(80, WHATSAPP_TARGET_CHARS - fixed))
        return limit_chars("\n".join([*intro, body, link, *tail]), WHATSAPP_MAX_CHARS)
    budget = 1400 if channel == C.CHANNEL_EMAIL else 1000
    body = select_passage(passage, question, budget)
    link = voice.say("link", title=passage.title, url=passage.url)
    if channel == C.CHANNEL_EMAIL:
        first = " ".join([voice.say("thanks"), *(intro or [voice.say("lead")])])
        text = "\n\n".join(
            [
                voice.greeting(display_name),
                first,
                body,
                link,
                *tail,
                voice.say("email_close"),
                f"{voice.say('regards')}\n{voice.playbook.signature}",
            ]
        )
        return limit_words(text, EMAIL_MAX_WORDS)
    text = "\n\n".join([voice.greeting(display_name), *intro, body, link, *tail, voice.say("web_close")])
    return limit_words(text, WEB_MAX_WORDS)


def escalation(
    channel: int,
    reason: str,
    ticket_id: str,
    follow_up_by: datetime,
    *,
    display_name: str,
    voice: Voice,
    lead: str = "",
) -> str:
    """An honest hand-over: who follows up and by when. It promises nothing else."""
    line = lead or voice.pack.escalation.get(reason) or voice.pack.escalation["manual"]
    when = voice.when(follow_up_by)
    if channel == C.CHANNEL_WHATSAPP:
        return limit_chars(f"{line} {voice.say('handoff_short', when=when, ticket=ticket_id)}", WHATSAPP_MAX_CHARS)
    return voice.frame(
        channel, display_name, f"{line} {voice.say('handoff', when=when, ticket=ticket_id)}", thanks=True
    )


def follow_up_ack(channel: int, ticket_id: str, display_name: str, voice: Voice) -> str:
    """The reply to a new message on a ticket that already waits for a person."""
    return voice.frame(channel, display_name, voice.say("follow_up_ack", ticket=ticket_id))


def conversational(channel: int, key: str, ticket_id: str, display_name: str, voice: Voice) -> str:
    """A reply that needs no article: to a greeting, a thank-you, or text that says nothing clear."""
    return voice.frame(channel, display_name, voice.say(key, ticket=ticket_id))


def limit_words(text: str, max_words: int) -> str:
    words = text.split(" ")
    if len(text.split()) <= max_words:
        return text
    out: list[str] = []
    count = 0
    for w in words:
        count += len(w.split())
        if count > max_words:
            break
        out.append(w)
    return " ".join(out).rstrip() + " …"


def limit_chars(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def word_count(text: str) -> int:
    return len(text.split())
