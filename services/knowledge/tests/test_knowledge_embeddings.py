"""Embedding providers (the offline model; the OpenAI-compatible client against a local fake
server) and background re-embedding when the model changes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import onnx
import onnxruntime
import openai
import pytest
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte_knowledge.articles import from_proto
from fte_knowledge.crosslingual import MODEL as CROSS_MODEL
from fte_knowledge.reembed import reembed_pending
from fte_knowledge.server import Knowledge, close_knowledge_base, open_knowledge_base
from fte_knowledge.settings import KnowledgeSettings
from fte_knowledge.store import Filters
from fte_runtime.embeddings import (
    LOCAL_DIMENSION,
    LOCAL_MODEL,
    LocalMiniLM,
    OpenAIEmbedder,
    int8_matmul_graph,
    model_file,
    tokenizer_file,
)
from fte_runtime.grpc_client import connect
from fte_stack.fakes.openai_embeddings import FakeOpenAIEmbeddings, fake_embedding
from knowledge_helpers import StartKnowledge, article  # type: ignore[import-not-found]
from pydantic import SecretStr
from tokenizers import Tokenizer


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAIEmbeddings]:
    fake = FakeOpenAIEmbeddings()
    await fake.start()
    yield fake
    await fake.stop()


async def test_local_model_gives_unit_vectors_that_capture_meaning(local_model: LocalMiniLM) -> None:
    assert local_model.model == LOCAL_MODEL
    texts = ["How do I reset my password?", "I forgot my password and cannot sign in", "Export a project to CSV"]
    a, b, c = await local_model.embed(texts)
    assert a.shape == (LOCAL_DIMENSION,)
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-5)
    assert float(a @ b) > float(a @ c) + 0.3
    # Batching and length-sorting do not change a text's vector.
    (again,) = await local_model.embed([texts[1]])
    assert np.allclose(again, b, atol=1e-5)
    assert await local_model.embed([]) == []


def test_local_model_does_weight_products_in_int8_and_stays_close_to_the_float_graph(
    local_model: LocalMiniLM,
) -> None:
    shipped = model_file().read_bytes()
    ops = Counter(node.op_type for node in onnx.load_from_string(int8_matmul_graph(shipped)).graph.node)
    assert ops["DynamicQuantizeMatMul"] == 36
    assert ops["MatMul"] == 12  # the attention products of activations stay float
    # The shipped graph as it is (weights dequantised to float) is the reference.
    reference = onnxruntime.InferenceSession(shipped, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(tokenizer_file()))
    tokenizer.no_padding()  # the file pads to 128 tokens
    texts = [
        "My password reset link says it has expired. What should I do?",
        "can I export my tasks to a spreadsheet",
        "We were charged twice for the Pro plan this month, please refund one of the payments.",
        "# Single sign-on > Okta\n\nCreate a SAML app in Okta, paste the metadata URL and assign the users.",
    ]
    cosines = []
    for text, vector in zip(texts, local_model.embed_sync(texts), strict=True):
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        pooled = reference.run(None, feeds)[0].mean(axis=1)[0]
        cosines.append(float(vector @ pooled) / float(np.linalg.norm(pooled)))
    assert min(cosines) > 0.98, cosines
    assert float(np.mean(cosines)) > 0.99, cosines


def test_int8_rewrite_refuses_a_graph_it_does_not_know() -> None:
    rewritten = int8_matmul_graph(model_file().read_bytes())
    with pytest.raises(RuntimeError, match="expected 36 int8 weight products in the model, found 0"):
        int8_matmul_graph(rewritten)


async def test_concurrent_local_embeds_share_batches_and_keep_their_own_vectors(local_model: LocalMiniLM) -> None:
    texts = [f"How do I {verb} a project?" for verb in ("export", "archive", "rename", "delete", "share", "copy")]
    alone = [(await local_model.embed([t]))[0] for t in texts]
    together = await asyncio.gather(
        local_model.embed(texts[:2]), local_model.embed(texts[2:3]), local_model.embed(texts[3:])
    )
    flat = [v for group in together for v in group]
    assert [len(g) for g in together] == [2, 1, 3]
    for a, b in zip(alone, flat, strict=True):
        assert np.allclose(a, b, atol=1e-5)


async def test_openai_embedder_batches_and_sends_dimensions(fake_openai: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(
        base_url=fake_openai.base_url, api_key="sk-test", model="text-embedding-3-small", dimension=256, batch_size=64
    )
    try:
        texts = [f"text number {i}" for i in range(100)]
        vectors = await embedder.embed(texts)
    finally:
        await embedder.close()
    assert len(vectors) == 100
    assert np.allclose(vectors[7], np.array(fake_embedding("text number 7", 256), dtype=np.float32), atol=1e-6)
    assert [len(r["input"]) for r in fake_openai.requests] == [64, 36]
    assert {(r["model"], r["dimensions"], r["encoding_format"]) for r in fake_openai.requests} == {
        ("text-embedding-3-small", 256, "float")
    }


async def test_openai_embedder_retries_then_gives_up_and_times_out(fake_openai: FakeOpenAIEmbeddings) -> None:
    embedder = OpenAIEmbedder(
        base_url=fake_openai.base_url, api_key="sk-test", model="m", dimension=32, max_retries=2, timeout_seconds=0.5
    )
    try:
        fake_openai.fail_next(2, 503)
        (vector,) = await embedder.embed(["hello"])
        assert vector.shape == (32,)
        assert len(fake_openai.requests) == 3

        fake_openai.fail_next(3, 500)
        with pytest.raises(openai.InternalServerError):
            await embedder.embed(["hello"])

        fake_openai.delay_next(3, 2.0)
        with pytest.raises(openai.APITimeoutError):
            await embedder.embed(["slow"])
    finally:
        await embedder.close()
    # A client error (here: a dimension the server refuses) is not retried.
    other = OpenAIEmbedder(base_url=fake_openai.base_url, api_key="k", model="m", dimension=20000, max_retries=3)
    before = len(fake_openai.requests)
    try:
        with pytest.raises(openai.BadRequestError):
            await other.embed(["x"])
    finally:
        await other.close()
    assert len(fake_openai.requests) == before + 1


async def test_service_with_openai_provider(
    start_knowledge: StartKnowledge, fake_openai: FakeOpenAIEmbeddings, tokens: dict[str, str]
) -> None:
    service = await start_knowledge(
        embedding_provider="openai",
        openai_base_url=fake_openai.base_url,
        openai_api_key=SecretStr("sk-test"),
        openai_model="text-embedding-3-small",
        openai_dimension=64,
    )
    channel = connect(f"127.0.0.1:{service.grpc.port}", token=tokens["staff"], default_timeout=30.0)
    try:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        await stub.CreateArticle(
            ks.CreateArticleRequest(article=article("sso", "Single sign-on", "# SSO\n\nSAML setup with Okta.\n"))
        )
        await stub.CreateArticle(
            ks.CreateArticleRequest(article=article("invoices", "Invoices", "# Invoices\n\nDownload PDF invoices.\n"))
        )
        response = await stub.SearchKnowledge(ks.SearchKnowledgeRequest(query="download invoices as pdf"))
    finally:
        await channel.close()
    assert response.embedding_model == "text-embedding-3-small"
    assert response.results[0].article == "articles/invoices"
    rows = await service.kb.store.pool.fetch(
        "SELECT DISTINCT model, dimension FROM chunk_embeddings WHERE model <> $1 ORDER BY model", CROSS_MODEL
    )
    assert [(r["model"], r["dimension"]) for r in rows] == [("text-embedding-3-small", 64)]


async def test_model_change_reembeds_in_background_and_search_never_mixes_models(
    start_knowledge: StartKnowledge,
    new_database: Callable[[], Awaitable[str]],
    fake_openai: FakeOpenAIEmbeddings,
    tokens: dict[str, str],
) -> None:
    dsn = await new_database()
    first = await start_knowledge(database_url=dsn)
    slugs = [f"doc-{i}" for i in range(6)]
    await first.kb.import_articles(
        [
            from_proto(article(slug, f"Topic {i}", f"# Topic {i}\n\nNotes about subject number {i} and more.\n"))
            for i, slug in enumerate(slugs)
        ]
    )
    assert (await first.kb.store.embedding_counts())[LOCAL_MODEL] == 6
    await first.stop()

    openai_settings = KnowledgeSettings(
        database_url=SecretStr(dsn),
        embedding_provider="openai",
        openai_base_url=fake_openai.base_url,
        openai_model="fake-embed",
        openai_dimension=48,
        reembed_batch_size=2,
    )
    # Without a server: a partial re-embedding shows that search only uses the current model.
    kb = await open_knowledge_base(openai_settings, "test")
    try:
        assert (await kb.search("subject", top_k=10, min_score=0, filters=Filters(), per_article=1)).hits == []
        pending = await kb.store.chunks_without(kb.model, 2)
        await kb.store.add_embeddings(
            [c for c, _ in pending], await kb.embedder.embed([t for _, t in pending]), kb.model
        )
        hits = (await kb.search("subject number", top_k=10, min_score=0, filters=Filters(), per_article=1)).hits
        done = {
            r["article_slug"]
            for r in await kb.store.pool.fetch(
                "SELECT c.article_slug FROM chunks c JOIN chunk_embeddings e ON e.chunk_id = c.id "
                "WHERE e.model = 'fake-embed'"
            )
        }
        assert len(done) == 2
        assert {h.hit.slug for h in hits} == done
        assert all(h.hit.similarity <= 1.0 for h in hits)
    finally:
        await close_knowledge_base(kb)

    # The server re-embeds the rest in the background and prunes the old model's vectors (the
    # cross-lingual model's stay: they do not depend on the search's model).
    wanted = {"fake-embed": 6, CROSS_MODEL: 6}
    second = await start_knowledge(
        database_url=dsn,
        embedding_provider="openai",
        openai_base_url=fake_openai.base_url,
        openai_model="fake-embed",
        openai_dimension=48,
        reembed_batch_size=2,
    )
    for _ in range(100):
        if await second.kb.store.embedding_counts() == wanted:
            break
        await asyncio.sleep(0.1)
    assert await second.kb.store.embedding_counts() == wanted
    channel = connect(f"127.0.0.1:{second.grpc.port}", token=tokens["kb-reader"], default_timeout=30.0)
    try:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        response = await stub.SearchKnowledge(ks.SearchKnowledgeRequest(query="subject number", top_k=10))
    finally:
        await channel.close()
    assert response.embedding_model == "fake-embed"
    assert {r.article for r in response.results} == {f"articles/{s}" for s in slugs}
    index_names = {
        r["indexname"]
        for r in await second.kb.store.pool.fetch(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = 'knowledge' AND indexname LIKE 'chunk_embeddings_hnsw_%'"
        )
    }
    assert len(index_names) == 3  # one HNSW index per model searched: two in turn, and the cross-lingual one


async def test_reembed_command_is_a_no_op_when_up_to_date(knowledge: Knowledge) -> None:
    await knowledge.kb.import_articles([from_proto(article("only-one"))])
    assert await reembed_pending(knowledge.kb) == 0
