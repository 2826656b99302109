"""Read articles for import: a folder of markdown files with front matter, or JSONL.

Markdown: `<folder>/<category>/<slug>.md` (any depth), starting with a front-matter block:

    ---
    title: Reset your password
    category: account
    tags: [password, login]
    language: en
    url: https://help.example/articles/reset-your-password
    ---

`slug` defaults to the file name and `category` to the parent folder. JSONL: one object per
line with the Article fields (`slug`, `title`, `body`, `category`, `tags`, `language`, `url`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fte_knowledge.articles import ArticleFields, normalise_tags


@dataclass(frozen=True, slots=True)
class SourceError:
    where: str
    message: str


def _scalar(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body). Supports `key: value` and `key: [a, b]` lines, which is all the
    knowledge base uses; a file without front matter is all body."""
    if not text.startswith("---"):
        return {}, text
    lines = text.splitlines()
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration as exc:
        raise ValueError("front matter is not closed by a '---' line") from exc
    meta: dict[str, Any] = {}
    for line in lines[1:end]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"front matter line {line!r} is not 'key: value'")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            meta[key.strip()] = [_scalar(v) for v in value[1:-1].split(",") if v.strip()]
        else:
            meta[key.strip()] = _scalar(value)
    body = "\n".join(lines[end + 1 :]).strip() + "\n"
    return meta, body


def _fields(data: dict[str, Any], *, slug: str = "", category: str = "") -> ArticleFields:
    tags = data.get("tags") or []
    if isinstance(tags, str):
        tags = tags.split(",")
    return ArticleFields(
        slug=str(data.get("slug") or slug).strip(),
        title=str(data.get("title") or "").strip(),
        body=str(data.get("body") or ""),
        category=str(data.get("category") or category).strip().lower(),
        tags=normalise_tags([str(t) for t in tags]),
        language=str(data.get("language") or "en").strip(),
        url=str(data.get("url") or "").strip(),
    )


def read_markdown(path: Path, root: Path) -> ArticleFields:
    meta, body = parse_front_matter(path.read_text(encoding="utf-8"))
    category = path.parent.name if path.parent != root else ""
    return _fields({**meta, "body": body}, slug=path.stem, category=category)


def read_source(path: Path) -> tuple[list[ArticleFields], list[SourceError]]:
    """Every article under `path` (a folder, a .md file or a .jsonl file), and what could not be read."""
    articles: list[ArticleFields] = []
    errors: list[SourceError] = []
    if path.is_dir():
        for file in sorted(path.rglob("*.md")):
            try:
                articles.append(read_markdown(file, path))
            except (ValueError, UnicodeDecodeError) as exc:
                errors.append(SourceError(str(file.relative_to(path)), str(exc)))
    elif path.suffix == ".md":
        articles.append(read_markdown(path, path.parent))
    elif path.suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    if not isinstance(data, dict):
                        raise ValueError("each line must be a JSON object")
                    articles.append(_fields(data))
                except ValueError as exc:
                    errors.append(SourceError(f"{path.name}:{number}", str(exc)))
    else:
        errors.append(SourceError(str(path), "expected a folder of .md files, a .md file or a .jsonl file"))
    return articles, errors
