"""`python -m fte_knowledge import PATH`: load a markdown folder or JSONL file into the knowledge
base, straight into the service's schema (same code path as BatchImportArticles).

Idempotent by slug: unchanged content (same hash) is skipped, changed content is updated."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from fte_runtime.errors import Violations
from tqdm import tqdm

from fte_knowledge.articles import ArticleFields, check_fields
from fte_knowledge.server import close_knowledge_base, open_knowledge_base
from fte_knowledge.service import Outcome
from fte_knowledge.settings import KnowledgeSettings
from fte_knowledge.sources import SourceError, read_source

BATCH = 16


def validate_all(articles: list[ArticleFields]) -> tuple[list[ArticleFields], list[SourceError]]:
    valid: list[ArticleFields] = []
    errors: list[SourceError] = []
    seen: set[str] = set()
    for fields in articles:
        v = Violations()
        check_fields(fields, v, prefix="article")
        v.check(fields.slug not in seen, "article.slug", "appears twice in the source")
        if v.items:
            errors.append(
                SourceError(fields.slug or "(no slug)", "; ".join(f"{i.field}: {i.description}" for i in v.items))
            )
            continue
        seen.add(fields.slug)
        valid.append(fields)
    return valid, errors


async def import_path(settings: KnowledgeSettings, path: Path, *, progress: bool = True) -> tuple[Counter[str], int]:
    """Imports what is valid; returns outcome counts and the number of articles rejected."""
    articles, errors = read_source(path)
    valid, invalid = validate_all(articles)
    errors += invalid
    for error in errors:
        print(f"skipped {error.where}: {error.message}", file=sys.stderr)
    counts: Counter[str] = Counter()
    kb = await open_knowledge_base(settings, "fte-knowledge-import")
    try:
        with tqdm(total=len(valid), unit="article", desc="import", disable=not progress) as bar:
            for start in range(0, len(valid), BATCH):
                batch = valid[start : start + BATCH]
                for _, outcome in await kb.import_articles(batch):
                    counts[outcome.value] += 1
                bar.update(len(batch))
        if counts[Outcome.CREATED.value] or counts[Outcome.UPDATED.value]:
            # Planner statistics (and the common words search leaves out) at once, not whenever
            # autovacuum next looks.
            await kb.store.analyze()
    finally:
        await close_knowledge_base(kb)
    return counts, len(errors)
