# ruff: noqa: S608 - SQL text is built only from constants and checked model names; values are bound.
"""SQL for articles, chunks and embeddings in the `knowledge` schema.

An article and its chunks (with their embeddings) always change in one transaction. Vectors live
in `chunk_embeddings`, one row per chunk and model; each model has its own partial HNSW index on
`embedding::vector(<dimension>)`, and every vector query names the model, so models never mix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from fte_runtime.embeddings import Vector

from fte_knowledge.articles import ArticleFields, StoredArticle
from fte_knowledge.chunking import Chunk

SCHEMA = "knowledge"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/@+-]{1,200}$")
# PostgreSQL text-search configurations for article languages; anything else uses "simple".
_TS_CONFIGS = {
    "da": "danish",
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fi": "finnish",
    "fr": "french",
    "hu": "hungarian",
    "it": "italian",
    "nl": "dutch",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sv": "swedish",
    "tr": "turkish",
}
_INNER_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_WORD = re.compile(r"[^\W_]+")
_MAX_QUERY_TERMS = 64


def ts_config(language: str) -> str:
    return _TS_CONFIGS.get(language.split("-", maxsplit=1)[0].lower(), "simple")


def fts_text(text: str) -> str:
    """Hyphens inside words become spaces, so "TL-4091" is indexed as "tl" and "4091" and a
    query for "4091" or "TL 4091" finds it."""
    return _INNER_HYPHEN.sub(" ", text)


def ranked_terms(words: str, config: str, common: str) -> str:
    """SQL for the tsquery source of the words (a text[]) without those whose lexemes are all
    `common` (a text[]), or of every word if all are; stop words stay (to_tsquery drops them)."""
    return f"""coalesce(
        (SELECT string_agg(w, ' | ' ORDER BY n)
         FROM unnest({words}::text[]) WITH ORDINALITY AS u(w, n),
              LATERAL tsvector_to_array(to_tsvector({config}::regconfig, w)) AS l(lexemes)
         WHERE cardinality(l.lexemes) = 0 OR NOT l.lexemes <@ {common}::text[]),
        array_to_string({words}::text[], ' | '))"""


def query_words(text: str) -> list[str]:
    """The distinct words the full-text side ranks by, any of which may match: customer
    questions rarely contain every word of the answer, and ts_rank puts chunks matching more
    words first."""
    return list(dict.fromkeys(_WORD.findall(fts_text(text).lower())))[:_MAX_QUERY_TERMS]


@dataclass(frozen=True, slots=True)
class Filters:
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    language: str = ""

    def sql(self, args: list[Any], alias: str = "a") -> str:
        """WHERE conditions (starting with AND) for these filters; appends their values to `args`."""
        parts: list[str] = []
        if self.categories:
            args.append(list(self.categories))
            parts.append(f"{alias}.category = ANY(${len(args)}::text[])")
        if self.tags:
            args.append(list(self.tags))
            parts.append(f"{alias}.tags @> ${len(args)}::text[]")
        if self.language:
            args.append(self.language)
            parts.append(f"{alias}.language = ${len(args)}")
        return "".join(f" AND {p}" for p in parts)


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    slug: str
    title: str
    url: str
    category: str
    language: str
    chunk_index: int
    heading: str
    text: str
    similarity: float
    text_rank: float = 0.0
    # The article's content hash when the hit was read: what cached re-ranking material is
    # checked against (see `material`).
    content_hash: str = ""


@dataclass(frozen=True, slots=True)
class VectorModel:
    """A model's name and dimension, checked once so they can be inlined into SQL: a partial
    index is only used when the planner sees the model as a constant."""

    name: str
    dimension: int

    def __post_init__(self) -> None:
        if not _MODEL_NAME.match(self.name) or self.dimension <= 0:
            raise ValueError(f"unusable embedding model name or dimension: {self.name!r}/{self.dimension}")

    @property
    def literal(self) -> str:
        return "'" + self.name.replace("'", "''") + "'"

    @property
    def column(self) -> str:
        return f"(e.embedding::public.vector({self.dimension}))"

    @property
    def index_name(self) -> str:
        digest = hashlib.sha256(f"{self.name}/{self.dimension}".encode()).hexdigest()[:12]
        return f"chunk_embeddings_hnsw_{digest}"


_ARTICLE_COLUMNS = "slug, title, body, category, tags, language, url, version, content_hash, create_time, update_time"


def _article(row: asyncpg.Record) -> StoredArticle:
    return StoredArticle(
        fields=ArticleFields(
            slug=row["slug"],
            title=row["title"],
            body=row["body"],
            category=row["category"],
            tags=tuple(row["tags"]),
            language=row["language"],
            url=row["url"],
        ),
        version=row["version"],
        content_hash=row["content_hash"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.common_lexemes: frozenset[str] = frozenset()

    # -- schema ----------------------------------------------------------------------------

    async def ensure_index(self, model: VectorModel) -> None:
        """The model's HNSW index (cosine). Built concurrently so writes continue meanwhile."""
        async with self.pool.acquire() as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND indexname = $2", SCHEMA, model.index_name
            )
            if exists:
                return
            await conn.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {model.index_name} ON {SCHEMA}.chunk_embeddings "
                f"USING hnsw ((embedding::public.vector({model.dimension})) public.vector_cosine_ops) "
                f"WHERE model = {model.literal}"
            )

    # -- articles ----------------------------------------------------------------------------

    async def get(self, slug: str, conn: Any = None, *, lock: bool = False) -> StoredArticle | None:
        sql = f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE slug = $1" + (" FOR UPDATE" if lock else "")
        row = await (conn or self.pool).fetchrow(sql, slug)
        return _article(row) if row else None

    async def get_by_request_id(self, request_id: str) -> StoredArticle | None:
        row = await self.pool.fetchrow(f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE request_id = $1", request_id)
        return _article(row) if row else None

    async def get_hashes(self, slugs: Sequence[str]) -> dict[str, str]:
        rows = await self.pool.fetch("SELECT slug, content_hash FROM articles WHERE slug = ANY($1::text[])", slugs)
        return {r["slug"]: r["content_hash"] for r in rows}

    async def list_articles(
        self, *, after_slug: str | None, limit: int, category: str, language: str, tag: str
    ) -> tuple[list[StoredArticle], int]:
        args: list[Any] = []
        where = Filters(categories=(category,) if category else (), tags=(tag,) if tag else (), language=language).sql(
            args, alias="articles"
        )
        total = await self.pool.fetchval(f"SELECT count(*) FROM articles WHERE true{where}", *args)
        page_args = [*args, after_slug or "", limit]
        rows = await self.pool.fetch(
            f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE slug > ${len(args) + 1}{where} "
            f"ORDER BY slug LIMIT ${len(args) + 2}",
            *page_args,
        )
        return [_article(r) for r in rows], int(total)

    async def insert(
        self,
        conn: Any,
        fields: ArticleFields,
        *,
        request_id: str | None = None,
    ) -> StoredArticle:
        row = await conn.fetchrow(
            f"""INSERT INTO articles (slug, title, body, category, tags, language, url, content_hash, request_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_ARTICLE_COLUMNS}""",
            fields.slug,
            fields.title,
            fields.body,
            fields.category,
            list(fields.tags),
            fields.language,
            fields.url,
            fields.content_hash(),
            request_id,
        )
        return _article(row)

    async def update(self, conn: Any, fields: ArticleFields) -> StoredArticle:
        row = await conn.fetchrow(
            f"""UPDATE articles SET title = $2, body = $3, category = $4, tags = $5, language = $6, url = $7,
                       content_hash = $8, version = version + 1, update_time = now()
                WHERE slug = $1 RETURNING {_ARTICLE_COLUMNS}""",
            fields.slug,
            fields.title,
            fields.body,
            fields.category,
            list(fields.tags),
            fields.language,
            fields.url,
            fields.content_hash(),
        )
        return _article(row)

    async def delete(self, conn: Any, slug: str) -> None:
        await conn.execute("DELETE FROM articles WHERE slug = $1", slug)

    async def replace_chunks(
        self,
        conn: Any,
        slug: str,
        *,
        language: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Vector],
        model: VectorModel,
    ) -> None:
        """Drops the article's chunks (their vectors go with them) and writes the new ones."""
        await conn.execute("DELETE FROM chunks WHERE article_slug = $1", slug)
        config = ts_config(language)
        ids = await conn.fetch(
            """INSERT INTO chunks (article_slug, chunk_index, heading, text, tsv)
               SELECT $1, t.i, t.h, t.x,
                      setweight(to_tsvector($5::regconfig, t.fh), 'A') || to_tsvector($5::regconfig, t.fx)
               FROM unnest($2::int[], $3::text[], $4::text[], $6::text[], $7::text[]) AS t(i, h, x, fh, fx)
               ORDER BY t.i
               RETURNING id, chunk_index""",
            slug,
            [c.index for c in chunks],
            [c.heading for c in chunks],
            [c.text for c in chunks],
            config,
            [fts_text(c.heading) for c in chunks],
            [fts_text(c.text) for c in chunks],
        )
        by_index = {r["chunk_index"]: r["id"] for r in ids}
        await self.insert_embeddings(conn, [by_index[c.index] for c in chunks], vectors, model)

    async def insert_embeddings(
        self, conn: Any, chunk_ids: Sequence[int], vectors: Sequence[Vector], model: VectorModel
    ) -> None:
        await conn.executemany(
            """INSERT INTO chunk_embeddings (chunk_id, model, dimension, embedding) VALUES ($1, $2, $3, $4)
               ON CONFLICT (chunk_id, model) DO UPDATE SET embedding = EXCLUDED.embedding, create_time = now()""",
            [(cid, model.name, model.dimension, vec) for cid, vec in zip(chunk_ids, vectors, strict=True)],
        )

    # -- re-embedding ------------------------------------------------------------------------

    async def chunks_without(self, model: VectorModel, limit: int) -> list[tuple[int, str]]:
        rows = await self.pool.fetch(
            """SELECT c.id, c.text FROM chunks c
               WHERE NOT EXISTS (SELECT 1 FROM chunk_embeddings e WHERE e.chunk_id = c.id AND e.model = $1)
               ORDER BY c.id LIMIT $2""",
            model.name,
            limit,
        )
        return [(r["id"], r["text"]) for r in rows]

    async def add_embeddings(self, chunk_ids: Sequence[int], vectors: Sequence[Vector], model: VectorModel) -> int:
        """Stores vectors for chunks that still exist (an article may have changed meanwhile);
        the share lock keeps them from being replaced until this transaction ends."""
        async with self.pool.acquire() as conn, conn.transaction():
            alive = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM chunks WHERE id = ANY($1::bigint[]) FOR SHARE", list(chunk_ids)
                )
            }
            keep = [(cid, vec) for cid, vec in zip(chunk_ids, vectors, strict=True) if cid in alive]
            if keep:
                await self.insert_embeddings(conn, [k[0] for k in keep], [k[1] for k in keep], model)
            return len(keep)

    async def prune_other_models(self, model: VectorModel, keep: Sequence[VectorModel] = ()) -> int:
        names = [model.name, *(k.name for k in keep)]
        result: str = await self.pool.execute("DELETE FROM chunk_embeddings WHERE model <> ALL($1::text[])", names)
        return int(result.rsplit(maxsplit=1)[-1])

    async def embedding_counts(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT model, count(*) AS n FROM chunk_embeddings GROUP BY model")
        return {r["model"]: r["n"] for r in rows}

    # -- search ------------------------------------------------------------------------------

    def vector_sql(self, model: VectorModel, filters: Filters, args: list[Any]) -> str:
        """Nearest chunks by cosine distance; `args` must start with (query vector, limit). The
        pool sets hnsw.ef_search and relaxed iterative scans (which keep filtered queries from
        coming back short), so the outer query puts the neighbours back in exact order."""
        where = filters.sql(args)
        return f"""
            WITH near AS MATERIALIZED (
                SELECT c.id, a.slug, a.title, a.url, a.category, a.language, c.chunk_index, c.heading, c.text,
                       a.content_hash, {model.column} <=> $1::public.vector({model.dimension}) AS distance
                FROM chunk_embeddings e
                JOIN chunks c ON c.id = e.chunk_id
                JOIN articles a ON a.slug = c.article_slug
                WHERE e.model = {model.literal}{where}
                ORDER BY {model.column} <=> $1::public.vector({model.dimension})
                LIMIT $2)
            SELECT *, 1 - distance AS similarity FROM near ORDER BY distance, id"""

    async def search_vector(self, vector: Vector, model: VectorModel, filters: Filters, limit: int) -> list[Hit]:
        args: list[Any] = [vector, limit]
        return [_hit(r) for r in await self.pool.fetch(self.vector_sql(model, filters, args), *args)]

    def hybrid_sql(self, model: VectorModel, filters: Filters, args: list[Any]) -> str:
        """Hybrid search in one statement: the nearest chunks and the best full-text matches
        (`limit` each), fused by reciprocal rank, capped per article, best first.

        `args` must start with (query vector, limit, text-search configuration, query words,
        required tsquery or NULL, RRF k, top_k, chunks per article, minimum score, common lexemes).
        Words whose lexemes are all common are dropped (a cheap IDF: they barely rank, yet make
        the ranker score most of the table), unless every word is. When some chunks match the
        required tsquery (the query's exact identifiers, such as the "4091" of "TL-4091"), only
        those are ranked by text: an error code is what the customer means. A chunk's score is
        sum(1 / (k + rank)) over both rankings divided by its best value (rank 1 in both), so it
        lies in [0, 1]."""
        where = filters.sql(args)
        vector = f"$1::public.vector({model.dimension})"
        return f"""
            WITH q AS MATERIALIZED (  -- parsed once, not once per candidate row
                SELECT to_tsquery($3::regconfig, {ranked_terms("$4", "$3", "$10")}) AS q,
                       to_tsquery($3::regconfig, $5) AS r),
            near AS MATERIALIZED (
                SELECT e.chunk_id AS id, {model.column} <=> {vector} AS distance
                FROM chunk_embeddings e
                JOIN chunks c ON c.id = e.chunk_id
                JOIN articles a ON a.slug = c.article_slug
                WHERE e.model = {model.literal}{where}
                ORDER BY {model.column} <=> {vector}
                LIMIT $2),
            by_vector AS (SELECT id, row_number() OVER (ORDER BY distance, id) AS rank FROM near),
            matching AS (
                SELECT c.id, ts_rank(c.tsv, q.q) AS text_rank, coalesce(c.tsv @@ q.r, true) AS complete
                FROM q, chunks c
                JOIN articles a ON a.slug = c.article_slug
                WHERE (c.tsv @@ q.q OR c.tsv @@ q.r){where}
                  AND EXISTS (SELECT 1 FROM chunk_embeddings x WHERE x.chunk_id = c.id AND x.model = {model.literal})),
            by_text AS (
                SELECT id, text_rank, row_number() OVER (ORDER BY text_rank DESC, id) AS rank
                FROM matching
                WHERE complete OR NOT EXISTS (SELECT 1 FROM matching WHERE complete)
                ORDER BY text_rank DESC, id
                LIMIT $2),
            fused AS (
                SELECT coalesce(v.id, t.id) AS id, coalesce(t.text_rank, 0) AS text_rank,
                       (coalesce(1.0 / ($6 + v.rank), 0) + coalesce(1.0 / ($6 + t.rank), 0)) * ($6 + 1) / 2.0 AS score
                FROM by_vector v FULL JOIN by_text t ON t.id = v.id),
            ranked AS (
                SELECT f.id, f.score, f.text_rank, 1 - ({model.column} <=> {vector}) AS similarity,
                       row_number() OVER (
                           PARTITION BY c.article_slug
                           ORDER BY f.score DESC, {model.column} <=> {vector}, f.id) AS nth
                FROM fused f
                JOIN chunks c ON c.id = f.id
                JOIN chunk_embeddings e ON e.chunk_id = f.id AND e.model = {model.literal}
                WHERE f.score >= $9)
            SELECT c.id, a.slug, a.title, a.url, a.category, a.language, c.chunk_index, c.heading, c.text,
                   a.content_hash, r.similarity, r.text_rank, r.score
            FROM ranked r
            JOIN chunks c ON c.id = r.id
            JOIN articles a ON a.slug = c.article_slug
            WHERE r.nth <= $8
            ORDER BY r.score DESC, r.similarity DESC, r.id
            LIMIT $7"""

    async def ranked_terms(self, words: Sequence[str], config: str) -> str:
        """The tsquery source the full-text side ranks `words` by (see `ranked_terms`)."""
        text: str = await self.pool.fetchval(
            f"SELECT {ranked_terms('$1', '$2', '$3')}", list(words), config, sorted(self.common_lexemes)
        )
        return text

    async def search_hybrid(
        self,
        query: str,
        vector: Vector,
        model: VectorModel,
        filters: Filters,
        *,
        candidates: int,
        rrf_k: int,
        top_k: int,
        per_article: int,
        min_score: float,
        extra_words: Sequence[str] = (),
        language: str = "",
    ) -> list[tuple[Hit, float]]:
        """(hit, fused score) pairs, best first; see `hybrid_sql`. `extra_words` join the
        full-text side's words (never its required identifiers); `language` chooses its
        text-search configuration when no language filter does."""
        words = query_words(query)
        identifiers = " & ".join(w for w in words if any(ch.isdigit() for ch in w))
        words = list(dict.fromkeys([*words, *extra_words]))[:_MAX_QUERY_TERMS]
        args: list[Any] = [
            vector,
            candidates,
            ts_config(filters.language or language or "en"),
            words,
            identifiers or None,
            rrf_k,
            top_k,
            per_article,
            min_score,
            sorted(self.common_lexemes),
        ]
        rows = await self.pool.fetch(self.hybrid_sql(model, filters, args), *args)
        return [(_hit(r), float(r["score"])) for r in rows]

    async def candidate_material(
        self, slugs: Sequence[str], model: VectorModel, cross_model: VectorModel | None
    ) -> list[asyncpg.Record]:
        """For re-ranking: every chunk of these articles with its heading and vector (and its
        cross-lingual vector, when that model is given and the chunk has one), in chunk order;
        the article's body comes with its first chunk."""
        cross_join = (
            f"LEFT JOIN chunk_embeddings x ON x.chunk_id = c.id AND x.model = {cross_model.literal}"
            if cross_model
            else ""
        )
        cross_column = "x.embedding" if cross_model else "NULL::public.vector"
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""SELECT a.slug, a.title, a.language, a.content_hash, c.chunk_index, c.heading,
                       CASE WHEN c.chunk_index = 0 THEN a.body END AS body,
                       e.embedding AS vector, {cross_column} AS cross_vector
                FROM articles a
                JOIN chunks c ON c.article_slug = a.slug
                JOIN chunk_embeddings e ON e.chunk_id = c.id AND e.model = {model.literal}
                {cross_join}
                WHERE a.slug = ANY($1::text[])
                ORDER BY a.slug, c.chunk_index""",
            list(slugs),
        )
        return rows

    async def vocabulary_texts(self) -> list[str]:
        """Titles, section headings and tags of every article: the knowledge base's own words."""
        rows = await self.pool.fetch(
            """SELECT title AS t FROM articles
               UNION SELECT DISTINCT unnest(tags) FROM articles
               UNION SELECT DISTINCT heading FROM chunks"""
        )
        return [r["t"] for r in rows]

    async def analyze(self) -> None:
        await self.pool.execute("ANALYZE articles, chunks, chunk_embeddings")

    async def refresh_common_lexemes(self, max_fraction: float) -> None:
        """Lexemes found in more than `max_fraction` of all chunks, from the planner statistics
        that ANALYZE (or autovacuum) keeps for the tsvector column; empty until it has run."""
        row = await self.pool.fetchrow(
            """SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs
               FROM pg_stats WHERE schemaname = $1 AND tablename = 'chunks' AND attname = 'tsv'""",
            SCHEMA,
        )
        common: frozenset[str] = frozenset()
        if row is not None and row["elems"] and max_fraction > 0:
            common = frozenset(e for e, f in zip(row["elems"], row["freqs"], strict=False) if f > max_fraction)
        self.common_lexemes = common


def _hit(row: asyncpg.Record) -> Hit:
    return Hit(
        chunk_id=row["id"],
        slug=row["slug"],
        title=row["title"],
        url=row["url"],
        category=row["category"],
        language=row["language"],
        chunk_index=row["chunk_index"],
        heading=row["heading"],
        text=row["text"],
        similarity=float(row["similarity"]),
        text_rank=float(row.get("text_rank", 0.0)),
        content_hash=row.get("content_hash", ""),
    )
