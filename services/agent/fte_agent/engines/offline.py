"""The offline engine: no model, no credentials. It searches the knowledge base (a second,
reformulated search when the first finds nothing good) and answers only with what a retrieved
passage says, or hands over to a person."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from fte.common.v1 import common_pb2

from fte_agent import compose, policy
from fte_agent.compose import Passage, Voice
from fte_agent.tools import CATEGORIES, PRIORITIES, Toolbox

C = common_pb2

# Everyday words customers use, mapped to the words the help centre uses.
_SYNONYMS: dict[str, str] = {
    "login": "sign in",
    "log in": "sign in",
    "logon": "sign in",
    "signin": "sign in",
    "pw": "password",
    "pwd": "password",
    "passcode": "password",
    "2fa": "two-factor authentication",
    "mfa": "two-factor authentication",
    "authenticator": "two-factor authentication",
    "csv": "export csv",
    "excel": "export excel",
    "bill": "invoice billing",
    "receipt": "invoice",
    "card": "payment method card",
    "app": "mobile app",
    "iphone": "mobile app ios",
    "android": "mobile app android",
    "laggy": "slow",
    "sluggish": "slow",
    "teammate": "invite teammates",
    "colleague": "invite teammates",
    "coworker": "invite teammates",
    "delete": "delete",
    "remove": "delete",
    "notification": "notifications",
    "emails": "email notifications",
    "hook": "webhook",
    "token": "api token",
    "key": "api key",
    "kanban": "board view",
    "gantt": "timeline view",
}

_FILLER = re.compile(
    r"\b(hi|hello|hey|dear|team|support|thanks?( you)?|cheers|regards|best|please|pls|kindly|urgent|quick "
    r"question|i have a question|can you|could you|would you|help me|i need|i want|i would like|tasklane)\b",
    re.I,
)


def reformulate(query: str) -> str:
    """Key terms of the question with help-centre vocabulary, for the second search."""
    text = _FILLER.sub(" ", query.lower())
    for word, replacement in _SYNONYMS.items():
        text = re.sub(rf"\b{re.escape(word)}\b", replacement, text)
    terms = [w for w in re.findall(r"[a-z0-9äöüßáéíóúñç-]+", text) if w not in compose._STOP and len(w) > 1]
    seen: list[str] = []
    for t in terms:
        if t not in seen:
            seen.append(t)
    return " ".join(seen[:24])


# A passage in another language than the question shares no words with it and MiniLM does not
# read both languages: the search's multilingual section similarity decides instead. On the
# knowledge tests' translated questions, 90% of right top results reach 0.82 (wrong ones: median 0.84,
# so this keeps off-topic questions out rather than choosing among near neighbours).
MIN_TRANSLATED_SIMILARITY = 0.82


def relevant(passages: list[Passage], question: str, min_similarity: float) -> Passage | None:
    """The best-ranked passage that is good enough to answer from: semantically close to the
    question and sharing at least one key term with it (or, for a passage in another language,
    close in the multilingual model)."""
    wanted = compose.keywords(question)
    for p in passages[:3]:
        if p.translated:
            if p.section_similarity >= MIN_TRANSLATED_SIMILARITY:
                return p
            continue
        if p.similarity >= min_similarity and wanted & compose.keywords(f"{p.title} {p.heading} {p.text}"):
            return p
    return None


def merge_article_chunks(best: Passage, results: list[Passage]) -> Passage:
    """The best passage plus the other retrieved chunk of the same article (a section often
    continues in the next chunk), best first."""
    extra = [p for p in results if p.article == best.article and p.text != best.text][:1]
    if not extra:
        return best
    return dataclasses.replace(best, text=best.text + "\n\n" + extra[0].text)


class OfflineEngine:
    name = "offline"

    def __init__(self, min_similarity: float, voice: Callable[[str], Voice]) -> None:
        self.min_similarity = min_similarity
        self.voice = voice

    async def run(self, tools: Toolbox, assessment: policy.Assessment) -> None:
        req = tools.request
        voice = self.voice(assessment.language)
        question = assessment.text
        await tools.create_ticket(
            category=_category_name(assessment.category), priority=_priority_name(assessment.priority)
        )
        if not compose.keywords(question):
            await tools.escalate_to_human("no_answer_found", "The message holds no question to answer.")
            return
        lead, exclude = "", ""
        if assessment.intent == "follow_up":
            previous = await _previous_exchange(tools)
            if previous is not None:
                # "That didn't work": search with what they first asked, and offer something else.
                earlier, exclude = previous
                question = f"{earlier}\n{question}"
                lead = f"{voice.say('follow_up_failed')} {voice.say('follow_up_lead')}"
        results = [p for p in await tools.search_knowledge_base(question) if not exclude or p.url != exclude]
        best = relevant(results, question, self.min_similarity)
        if best is None:
            second = reformulate(question)
            if second and second != question:
                results = [p for p in await tools.search_knowledge_base(second) if not exclude or p.url != exclude]
                best = relevant(results, question, self.min_similarity)
        if best is None:
            if lead:
                tools.outcome.escalation_lead = voice.say("follow_up_failed")
            await tools.escalate_to_human(
                "no_answer_found", "Nothing relevant in the knowledge base after two searches."
            )
            return
        tools.outcome.cited.append(best)
        # The search names the section that answers (matched on meaning, steps whole); an older
        # knowledge service does not, and the article's body is searched for it here instead.
        section = best.section_text
        if not section:
            body = await tools.read_article(best.article)
            section = compose.best_section(body, question, best.heading)[1] if body else ""
        if section:
            # Answer from the article's best section rather than from wherever the chunk was cut.
            best = dataclasses.replace(best, text=section)
        elif req.channel != C.CHANNEL_WHATSAPP:
            best = merge_article_chunks(best, results)
        await tools.send_response(
            compose.answer(req.channel, best, question, display_name=req.display_name, voice=voice, lead=lead)
        )


async def _previous_exchange(tools: Toolbox) -> tuple[str, str] | None:
    """The customer's previous message and the article URL our reply to it linked, if the last
    thing said on the conversation was our answer."""
    history = await tools.get_customer_history(6)
    for i, item in enumerate(history):
        if item["author"] != "support":
            continue
        urls = re.findall(r"https?://\S+", item["text"])
        earlier = next((h["text"] for h in history[i + 1 :] if h["author"] == "customer"), "")
        if urls and earlier:
            return earlier, urls[-1].rstrip(".,)")
        return None
    return None


def _category_name(category: int) -> str:
    return next((k for k, v in CATEGORIES.items() if v == category), "")


def _priority_name(priority: int) -> str:
    return next((k for k, v in PRIORITIES.items() if v == priority), "")
