# ruff: noqa: S608 - SQL text is built only from constants; values are bound.
"""SQL for knowledge gaps (`gaps`, `gap_groups` in the `knowledge` schema).

A gap is a customer question the knowledge base answered with low confidence or not at all, with
the best articles that were found for it and the question's embedding. Gaps are grouped when they
are recorded: a group keeps the embedding of its first question, and a new gap joins the group
whose first question is the most similar (cosine, same model and dimension) if that similarity is
at least the threshold, or opens a group of its own. Recording takes a transaction-scoped advisory
lock, so two similar questions recorded at once cannot open two groups.

No customer identity is stored: questions are kept (with emails and phone numbers redacted by the
caller of `record`) until the retention period ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from fte_runtime.embeddings import Vector

from fte_knowledge.store import VectorModel

# One lock for every recording: gaps are few (a fraction of the questions) and each takes a few ms.
_LOCK_KEY = "fte-knowledge:gaps"
_GAP_COLUMNS = "id, group_id, question, language, channel, outcome, candidates, create_time"


@dataclass(frozen=True, slots=True)
class Candidate:
    article: str  # "articles/{slug}"
    score: float


@dataclass(frozen=True, slots=True)
class NewGap:
    question: str
    language: str
    channel: int
    outcome: int
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class StoredGap:
    id: str
    group_id: int
    question: str
    language: str
    channel: int
    outcome: int
    candidates: tuple[Candidate, ...]
    create_time: datetime


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    gap_count: int
    newest_time: datetime
    representative: StoredGap
    gaps: list[StoredGap]
    candidates: list[Candidate]


def _gap(row: asyncpg.Record) -> StoredGap:
    return StoredGap(
        id=str(row["id"]),
        group_id=row["group_id"],
        question=row["question"],
        language=row["language"],
        channel=row["channel"],
        outcome=row["outcome"],
        candidates=tuple(Candidate(c["article"], float(c["score"])) for c in json.loads(row["candidates"])),
        create_time=row["create_time"],
    )


class GapStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get_by_request_id(self, request_id: str, conn: Any = None) -> StoredGap | None:
        row = await (conn or self.pool).fetchrow(f"SELECT {_GAP_COLUMNS} FROM gaps WHERE request_id = $1", request_id)
        return _gap(row) if row is not None else None

    async def record(
        self,
        gap: NewGap,
        vector: Vector,
        model: VectorModel,
        *,
        threshold: float,
        request_id: str | None,
        retention_days: int,
    ) -> tuple[StoredGap, bool]:
        """Stores the gap in the group it belongs to; (gap, False), or (the earlier gap, True)
        when `request_id` was recorded before. Gaps older than `retention_days` (0: none) are
        deleted on the way, and groups left empty with them."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK_KEY)
            if request_id is not None and (earlier := await self.get_by_request_id(request_id, conn)) is not None:
                return earlier, True
            if retention_days > 0:
                await conn.execute(
                    "DELETE FROM gaps WHERE create_time < now() - make_interval(days => $1)", retention_days
                )
                await conn.execute(
                    "DELETE FROM gap_groups g WHERE NOT EXISTS (SELECT 1 FROM gaps x WHERE x.group_id = g.id)"
                )
            nearest = await conn.fetchrow(
                """SELECT id, 1 - (embedding <=> $1) AS similarity FROM gap_groups
                   WHERE model = $2 AND vector_dims(embedding) = $3
                   ORDER BY embedding <=> $1, id LIMIT 1""",
                vector,
                model.name,
                model.dimension,
            )
            if nearest is not None and float(nearest["similarity"]) >= threshold:
                group_id = nearest["id"]
            else:
                group_id = await conn.fetchval(
                    "INSERT INTO gap_groups (model, embedding) VALUES ($1, $2) RETURNING id", model.name, vector
                )
            row = await conn.fetchrow(
                f"""INSERT INTO gaps (group_id, question, language, channel, outcome, candidates, model,
                                      embedding, request_id)
                    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9) RETURNING {_GAP_COLUMNS}""",
                group_id,
                gap.question,
                gap.language,
                gap.channel,
                gap.outcome,
                json.dumps([{"article": c.article, "score": c.score} for c in gap.candidates]),
                model.name,
                vector,
                request_id,
            )
        return _gap(row), False

    async def list_groups(
        self, *, after: tuple[datetime, int] | None, limit: int, gaps_per_group: int, candidates_per_group: int
    ) -> tuple[list[Group], int]:
        """Groups ordered by their newest gap (newest first, then by id), starting after `after`
        (the newest time and id of the previous page's last group); and the number of groups."""
        total = await self.pool.fetchval("SELECT count(DISTINCT group_id) FROM gaps")
        rows = await self.pool.fetch(
            """SELECT group_id, count(*) AS n, max(create_time) AS newest FROM gaps
               GROUP BY group_id
               HAVING $1::timestamptz IS NULL OR (max(create_time), group_id) < ($1::timestamptz, $2::bigint)
               ORDER BY newest DESC, group_id DESC
               LIMIT $3""",
            after[0] if after else None,
            after[1] if after else 0,
            limit,
        )
        ids = [r["group_id"] for r in rows]
        if not ids:
            return [], int(total)
        members: dict[int, list[StoredGap]] = {i: [] for i in ids}
        for r in await self.pool.fetch(
            f"""SELECT m.* FROM unnest($1::bigint[]) AS p(gid),
                LATERAL (SELECT {_GAP_COLUMNS} FROM gaps WHERE group_id = p.gid
                         ORDER BY create_time DESC, id DESC LIMIT $2) AS m""",
            ids,
            gaps_per_group,
        ):
            members[r["group_id"]].append(_gap(r))
        # The first question of each group (the one the others were matched with, unless the
        # retention period has removed it: then the oldest left).
        firsts = {
            r["group_id"]: _gap(r)
            for r in await self.pool.fetch(
                f"""SELECT DISTINCT ON (group_id) {_GAP_COLUMNS} FROM gaps WHERE group_id = ANY($1::bigint[])
                    ORDER BY group_id, create_time, id""",
                ids,
            )
        }
        candidates: dict[int, list[Candidate]] = {i: [] for i in ids}
        for r in await self.pool.fetch(
            """SELECT group_id, article, score FROM (
                   SELECT group_id, article, max(score) AS score,
                          row_number() OVER (PARTITION BY group_id ORDER BY max(score) DESC, article) AS nth
                   FROM gaps, jsonb_to_recordset(candidates) AS c(article text, score float8)
                   WHERE group_id = ANY($1::bigint[])
                   GROUP BY group_id, article) best
               WHERE nth <= $2
               ORDER BY group_id, score DESC, article""",
            ids,
            candidates_per_group,
        ):
            candidates[r["group_id"]].append(Candidate(r["article"], float(r["score"])))
        groups = [
            Group(
                id=r["group_id"],
                gap_count=r["n"],
                newest_time=r["newest"],
                representative=firsts[r["group_id"]],
                gaps=members[r["group_id"]],
                candidates=candidates[r["group_id"]],
            )
            for r in rows
        ]
        return groups, int(total)


def top_candidates(candidates: Sequence[Candidate], limit: int) -> tuple[Candidate, ...]:
    """Best score per article, best first, at most `limit`."""
    best: dict[str, float] = {}
    for c in candidates:
        best[c.article] = max(best.get(c.article, c.score), c.score)
    return tuple(Candidate(a, s) for a, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])
