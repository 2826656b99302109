"""Query understanding (fte_knowledge.query) and the second stage (fte_knowledge.rerank), on
their own."""

from __future__ import annotations

import numpy as np
from fte_knowledge.query import detect_language, expansions, question_parts, strip_noise, understand, vocabulary
from fte_knowledge.rerank import Candidate, Weights, article_sections, rerank


def test_greetings_sign_offs_signatures_and_filler_are_removed() -> None:
    email = (
        "Hi team,\n\nI hope you're well. Quick question: how do I export a project to Excel?\n\n"
        "Thanks a lot,\nMarta\nHead of Ops, Brightside Ltd"
    )
    assert strip_noise(email) == "how do I export a project to Excel?"
    assert strip_noise("hey pls how do i get the gantt thing, cheers Tom") == "how do i get the gantt thing"
    assert strip_noise("Reset link expired\n--\nJohn Smith\n+44 20 7946 0000") == "Reset link expired"
    # "best" inside the question is no sign-off; a message that is only a greeting stays as written.
    assert strip_noise("what is the best plan for 5 people") == "what is the best plan for 5 people"
    assert strip_noise("Hello!") == "Hello!"


def test_expansions_use_only_the_knowledge_base_words() -> None:
    kb = vocabulary(["Set up two-factor authentication (2FA)", "Invite teammates to your workspace", "password"])
    assert expansions("my authenticator app is gone", kb) == ["two", "factor", "authentication"]
    assert expansions("give a new colleague access", kb) == ["invite", "teammates"]
    # "gantt" maps to "timeline view", which this knowledge base never uses.
    assert expansions("where is the gantt chart", kb) == []


def test_codes_are_kept_exactly_and_parts_are_split() -> None:
    understood = understand('API says TL-4093 and "User not assigned"')
    assert understood.exact == ("user not assigned", "tl-4093")
    assert question_parts("How do I turn on 2FA? And can I require it for everyone?") == [
        "How do I turn on 2FA?",
        "And can I require it for everyone?",
    ]
    assert question_parts("how do I reset my password") == ["how do I reset my password"]


def test_language_of_the_question() -> None:
    assert detect_language("¿Cómo conecto Slack con mi cuenta?") == "es"
    assert detect_language("Wie aktiviere ich die Zwei-Faktor-Authentifizierung?") == "de"
    assert detect_language("Account password reset?") == "en"
    assert understand("olvidé mi contraseña", language="es-MX").language == "es"


def test_rerank_picks_the_answering_section_and_flags_a_partial_answer() -> None:
    body = "Intro text.\n\n## Turn on\n\n1. Open settings.\n2. Click enable.\n\n## Recovery codes\n\nKeep them safe.\n"
    sections = article_sections("Two-factor", body)
    assert [s.heading for s in sections] == ["", "Turn on", "Recovery codes"]
    assert sections[1].text == "1. Open settings.\n2. Click enable."
    e = np.eye(4, dtype=np.float32)
    other = Candidate("other", "Other", "en", 0.6, article_sections("Other", "Text."), [0], e[3:4])
    twofa = Candidate(
        "twofa", "Two-factor", "en", 0.5, sections, [0, 1, 2], np.stack([e[0] * 0.5 + e[2] * 0.5, e[1], e[2]])
    )
    question = (e[1] * 0.9 + e[0] * 0.1).astype(np.float32)
    parts = np.stack([e[1], e[3]])  # the second part is answered by "other" only
    ranked = rerank([other, twofa], question / np.linalg.norm(question), language="en", parts=parts)
    assert [r.slug for r in ranked] == ["twofa", "other"]
    assert ranked[0].section.heading == "Turn on"
    assert ranked[0].coverage == 0.5
    assert 0 <= ranked[1].score <= ranked[0].score <= 1


def test_the_multilingual_second_opinion_decides_between_close_articles() -> None:
    e = np.eye(4, dtype=np.float32)
    sections = article_sections("A", "Text.")
    # MiniLM rates both the same; only the multilingual vectors tell them apart.
    a = Candidate("a", "A", "en", 0.5, sections, [0], e[0:1], cross_vectors=e[2:3])
    b = Candidate("b", "B", "en", 0.5, sections, [0], e[0:1], cross_vectors=e[3:4])
    question = e[0]
    assert [r.slug for r in rerank([a, b], question, language="en")] == ["a", "b"]  # a tie, by slug
    deep = rerank([a, b], question, language="en", deep_question=e[3])
    assert [r.slug for r in deep] == ["b", "a"]
    assert all(0.0 <= r.score <= 1.0 for r in deep)
    # With no weight on the second opinion, the order stays MiniLM's.
    assert rerank([a, b], question, language="en", deep_question=e[3], weights=Weights(deep=0.0))[0].slug == "a"
