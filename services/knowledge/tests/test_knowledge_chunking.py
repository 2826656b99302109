"""Chunking and the markdown/JSONL readers (pure logic), and the sample knowledge base's shape."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from fte_knowledge.articles import ArticleFields
from fte_knowledge.chunking import chunk_article
from fte_knowledge.importer import validate_all
from fte_knowledge.sources import parse_front_matter, read_source

SAMPLE_KB = Path(__file__).resolve().parent.parent / "sample_kb"


def test_chunks_follow_headings_and_carry_the_heading_path() -> None:
    body = "# Guide\n\nIntro.\n\n## Setup\n\nStep one.\n\n### Details\n\nMore.\n\n## Usage\n\nUse it.\n"
    chunks = chunk_article("Guide", body)
    assert [c.heading for c in chunks] == ["Guide", "Guide > Setup", "Guide > Setup > Details", "Guide > Usage"]
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert chunks[2].text == "Guide > Setup > Details\n\nMore."


def test_long_sections_are_packed_by_paragraph_with_overlap() -> None:
    paragraphs = [f"Paragraph {i} " + " ".join(f"word{i}x{j}" for j in range(40)) + "." for i in range(8)]
    body = "## Section\n\n" + "\n\n".join(paragraphs)
    chunks = chunk_article("Title", body, max_chars=700, overlap_chars=100)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.heading == "Title > Section"
        assert len(chunk.text) <= 700 + 100 + len("Title > Section\n\n") + 2
    for earlier, later in itertools.pairwise(chunks):
        tail = earlier.text[-60:].split(" ", 1)[-1]
        assert tail in later.text  # the overlap repeats the end of the previous chunk
    joined = " ".join(c.text for c in chunks)
    assert all(p.split(" ", 2)[1] in joined for p in paragraphs)


def test_an_overlong_paragraph_is_cut_at_sentences_and_words() -> None:
    sentence = "This sentence has quite a few words in it. "
    chunks = chunk_article("T", sentence * 100 + "x" * 1500, max_chars=400, overlap_chars=50)
    assert len(chunks) > 5
    assert all(len(c.text) <= 400 + 50 + 10 for c in chunks)


def test_headings_inside_code_fences_are_text() -> None:
    body = "# T\n\n```bash\n# not a heading\ncurl x\n```\n\n## Real\n\nText.\n"
    chunks = chunk_article("T", body)
    assert [c.heading for c in chunks] == ["T", "T > Real"]
    assert "# not a heading" in chunks[0].text


def test_empty_body_gives_one_title_chunk() -> None:
    (only,) = chunk_article("Just a title", "   \n")
    assert only.text == "Just a title"


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_article("T", "text", max_chars=100, overlap_chars=100)


def test_front_matter() -> None:
    meta, body = parse_front_matter('---\ntitle: "A: b"\ntags: [x, y]\n---\n# Body\n')
    assert meta == {"title": "A: b", "tags": ["x", "y"]}
    assert body == "# Body\n"
    assert parse_front_matter("no front matter") == ({}, "no front matter")
    with pytest.raises(ValueError, match="closed"):
        parse_front_matter("---\ntitle: x\n")


def test_jsonl_reader_reports_bad_lines(tmp_path: Path) -> None:
    source = tmp_path / "kb.jsonl"
    source.write_text(
        '{"slug": "a", "title": "A", "body": "text", "tags": ["X"]}\nnot json\n\n[1, 2]\n', encoding="utf-8"
    )
    articles, errors = read_source(source)
    assert articles == [ArticleFields(slug="a", title="A", body="text", tags=("x",))]
    assert [e.where for e in errors] == ["kb.jsonl:2", "kb.jsonl:4"]


def test_sample_knowledge_base_is_complete_and_valid() -> None:
    articles, errors = read_source(SAMPLE_KB)
    assert errors == []
    valid, invalid = validate_all(articles)
    assert invalid == []
    assert len(valid) >= 40
    categories = {a.category for a in valid}
    assert {
        "getting-started",
        "account",
        "billing",
        "integrations",
        "api",
        "troubleshooting",
        "security",
        "data-export",
        "mobile",
        "notifications",
    } <= categories
    for a in valid:
        assert a.url == f"https://help.tasklane.example/articles/{a.slug}"
        assert a.tags
    assert {a.language for a in valid} >= {"en", "de", "es"}
