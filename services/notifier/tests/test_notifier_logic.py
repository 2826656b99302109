"""Pure logic: splitting, status ordering, the MIME reply, the 24-hour window."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

from fte_notifier.mime import build_email, references, reply_subject
from fte_notifier.splitting import WHATSAPP_MAX_CHARS, split_message
from fte_notifier.statuses import DELIVERED, FAILED, QUEUED, READ, SENT, advances, combine
from fte_notifier.validation import window_open


def test_short_text_is_one_part() -> None:
    assert split_message("  Hello there.  ") == ["Hello there."]


def test_long_text_splits_at_sentence_ends_in_order() -> None:
    sentences = [f"Sentence number {i} explains one more step of the setup." for i in range(120)]
    text = " ".join(sentences)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= WHATSAPP_MAX_CHARS for p in parts)
    assert all(p.endswith(".") for p in parts)  # every cut is after a sentence
    assert " ".join(parts) == text  # nothing lost, order kept


def test_a_sentence_longer_than_a_part_is_cut_at_spaces() -> None:
    text = "word " * 700 + "end."
    parts = split_message(text.strip())
    assert all(len(p) <= WHATSAPP_MAX_CHARS for p in parts)
    assert " ".join(parts).split() == text.split()


def test_statuses_only_move_forward() -> None:
    assert advances(QUEUED, SENT)
    assert advances(SENT, READ)
    assert not advances(READ, DELIVERED)
    assert not advances(DELIVERED, DELIVERED)
    assert advances(SENT, FAILED)
    assert not advances(DELIVERED, FAILED)
    assert not advances(FAILED, READ)
    assert combine([READ, DELIVERED]) == DELIVERED
    assert combine([READ, FAILED]) == FAILED


def test_reply_threads_with_in_reply_to_references_and_re_subject() -> None:
    reply_to = {"message_id": "orig@mail.example.com", "references": ["<a@x>", "b@x"], "in_reply_to": "<b@x>"}
    assert references(reply_to) == ["<a@x>", "<b@x>", "<orig@mail.example.com>"]
    msg = build_email(
        sender="support@example.com",
        recipient="c@example.org",
        subject="Cannot log in",
        text="Hello <you>.\n\nTry again.",
        message_id="d1@notifier.test",
        reply_to=reply_to,
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Re: Cannot log in"
    assert parsed["In-Reply-To"] == "<orig@mail.example.com>"
    assert parsed["References"] == "<a@x> <b@x> <orig@mail.example.com>"
    assert parsed["Message-ID"] == "<d1@notifier.test>"
    assert parsed.get_content_type() == "multipart/alternative"
    kinds = [p.get_content_type() for p in parsed.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert "Hello &lt;you&gt;." in html_part.get_content()
    assert reply_subject("RE: Cannot log in", True) == "RE: Cannot log in"


def test_whatsapp_window_is_24_hours_and_unknown_is_closed() -> None:
    now = datetime.now(UTC)
    assert window_open(now - timedelta(hours=23, minutes=59), now)
    assert not window_open(now - timedelta(hours=24, seconds=1), now)
    assert not window_open(None, now)
