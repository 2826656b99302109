"""Split a markdown article into chunks for embedding and full-text search.

Sections follow the headings; inside a section, paragraphs are packed up to `max_chars`, and a
paragraph too long on its own is cut at sentence or word boundaries. Consecutive pieces of one
section share `overlap_chars` of text so an answer straddling a boundary is still found whole.
Every chunk starts with its heading path, which carries the context a paragraph alone lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    heading: str  # "Title > Section > Subsection"
    text: str  # the heading path, a blank line, then the chunk's content


def sections(title: str, body: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) per section, in order."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str]]] = []
    paragraphs: list[str] = []
    current: list[str] = []
    in_fence = False

    def heading_path() -> str:
        names = [name for _, name in path]
        if not names or names[0] != title:
            names.insert(0, title)
        return " > ".join(names)

    def end_paragraph() -> None:
        if current:
            text = "\n".join(current).strip()
            if text:
                paragraphs.append(text)
            current.clear()

    def end_section() -> None:
        end_paragraph()
        if paragraphs:
            sections.append((heading_path(), list(paragraphs)))
            paragraphs.clear()

    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            current.append(line)
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            end_section()
            level = len(match.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, match.group(2).strip()))
            continue
        if not in_fence and not line.strip():
            end_paragraph()
            continue
        current.append(line)
    end_section()
    return sections


def _split_long(text: str, limit: int) -> list[str]:
    """Cut one over-long paragraph at sentence ends, else at spaces, else hard."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        rest = sentence
        while len(rest) > limit:
            cut = rest.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            pieces.append(rest[:cut].strip())
            rest = rest[cut:].strip()
        if rest:
            pieces.append(rest)
    return pieces


def _tail(text: str, size: int) -> str:
    """The last `size` characters of `text`, starting at a word boundary."""
    if size <= 0 or len(text) <= size:
        return text if size > 0 else ""
    start = text.find(" ", len(text) - size)
    return text[start + 1 :] if start != -1 else text[-size:]


def chunk_article(title: str, body: str, *, max_chars: int = 1000, overlap_chars: int = 150) -> list[Chunk]:
    """The article's chunks; an article with an empty body yields one chunk holding its title."""
    if overlap_chars >= max_chars:
        raise ValueError("overlap_chars must be smaller than max_chars")
    chunks: list[Chunk] = []
    for heading, paragraphs in sections(title, body):
        units: list[str] = []
        for para in paragraphs:
            units.extend(_split_long(para, max_chars) if len(para) > max_chars else [para])
        buffer = ""
        for unit in units:
            candidate = f"{buffer}\n\n{unit}" if buffer else unit
            if len(candidate) <= max_chars or not buffer:
                buffer = candidate
                continue
            chunks.append(Chunk(len(chunks), heading, f"{heading}\n\n{buffer}"))
            overlap = _tail(buffer, overlap_chars)
            buffer = f"{overlap}\n\n{unit}" if overlap else unit
        if buffer:
            chunks.append(Chunk(len(chunks), heading, f"{heading}\n\n{buffer}"))
    if not chunks:
        chunks.append(Chunk(0, title, title))
    return chunks
