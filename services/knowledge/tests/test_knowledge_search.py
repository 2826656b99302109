"""Hybrid search through the gRPC API: exact identifiers, filters, per-article limits, citations,
min_score and bad input."""

from __future__ import annotations

from unittest.mock import ANY

import grpc
import pytest
from fte.knowledge.v1 import knowledge_pb2
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_knowledge.server import Knowledge
from fte_knowledge.store import Filters, query_words
from fte_runtime.embeddings import MULTILINGUAL_MODEL
from fte_runtime.errors import field_violations
from google.protobuf.field_mask_pb2 import FieldMask
from knowledge_helpers import Stub, article, failure, violations  # type: ignore[import-not-found]

# A small help centre where one article mentions the code QX-5518 in passing, and another,
# far closer in meaning to a customer's question about an API error, carries a look-alike code.
CORPUS = [
    article(
        "api-errors-overview",
        "API errors explained",
        "# API errors explained\n\nWhen a request fails, the API answers with an HTTP status and an error object "
        "with a code and a message. Retry server errors with backoff; fix client errors before retrying.\n",
        category="api",
        tags=["api", "errors"],
    ),
    article(
        "auth-errors",
        "Authentication errors",
        "# Authentication errors\n\nAn invalid or expired token makes every call fail with an authentication "
        "error code. Create a new token in settings.\n",
        category="api",
        tags=["api", "errors", "tokens"],
    ),
    article(
        "export-api-errors",
        "Export API errors",
        "# Export API errors\n\nWhen the export API rejects a request it returns error QX-5581 with a message "
        "saying which parameter was wrong. Fix the request and call the export API again.\n",
        category="api",
        tags=["api", "export"],
    ),
    article(
        "legacy-export-shutdown",
        "Legacy CSV exporter retirement",
        "# Legacy CSV exporter retirement\n\nThe old exporter was switched off on 1 March. Scheduled exports "
        "created before then stop running and their owners receive the notice QX-5518 in the activity feed. "
        "Recreate the schedule under Settings > Export.\n",
        category="data-export",
        tags=["export"],
        url="https://help.example/articles/legacy-export-shutdown",
    ),
    article(
        "reset-password",
        "Reset your password",
        "# Reset your password\n\n## By email\n\nClick Forgot password on the sign-in page and follow the link "
        "we email you. The link works for 60 minutes.\n\n## When the email does not arrive\n\nCheck spam, and "
        "make sure you typed the address you signed up with.\n\n## While signed in\n\nGo to Settings > "
        "Security > Change password.\n",
        category="account",
        tags=["password", "login"],
        url="https://help.example/articles/reset-password",
    ),
    article(
        "passwort-zuruecksetzen",
        "Passwort zurücksetzen",
        "# Passwort zurücksetzen\n\nKlicken Sie auf der Anmeldeseite auf Passwort vergessen und folgen Sie dem "
        "Link in der E-Mail.\n",
        category="account",
        tags=["password", "login"],
        language="de",
    ),
]


@pytest.fixture
async def corpus(staff: Stub) -> None:
    await staff.BatchImportArticles(ks.BatchImportArticlesRequest(articles=CORPUS))


QUESTION = "I keep getting error QX-5518 from the export API"


async def test_hybrid_finds_an_error_code_that_vector_search_misses(
    corpus: None, staff: Stub, knowledge: Knowledge
) -> None:
    kb = knowledge.kb
    (vector,) = await kb.embedder.embed([QUESTION])
    by_vector = await kb.store.search_vector(vector, kb.model, Filters(), 5)
    # Pure vector search prefers the look-alike article: it is closer in meaning.
    assert by_vector[0].slug == "export-api-errors"
    assert by_vector[0].slug != "legacy-export-shutdown"

    response = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query=QUESTION, top_k=3))
    top = response.results[0]
    assert top.article == "articles/legacy-export-shutdown"
    assert response.embedding_model == kb.model.name
    # Citation fields.
    assert top.title == "Legacy CSV exporter retirement"
    assert top.url == "https://help.example/articles/legacy-export-shutdown"
    assert "QX-5518" in top.chunk_text
    assert top.heading == "Legacy CSV exporter retirement"
    assert top.chunk_index == 0
    assert top.category == "data-export"
    assert top.language == "en"
    assert 0 < top.score <= 1
    assert -1 <= top.vector_similarity <= 1
    assert [r.score for r in response.results] == sorted((r.score for r in response.results), reverse=True)


async def test_every_connection_searches_with_the_configured_hnsw_settings(knowledge: Knowledge) -> None:
    pool = knowledge.kb.store.pool
    # Several connections at once, so more than one of the pool's sessions is checked.
    async with pool.acquire() as first, pool.acquire() as second:
        for conn in (first, second):
            assert await conn.fetchval("SHOW hnsw.ef_search") == str(knowledge.settings.hnsw_ef_search)
            assert await conn.fetchval("SHOW hnsw.iterative_scan") == "relaxed_order"


async def test_paraphrase_is_found_by_meaning(corpus: None, staff: Stub) -> None:
    response = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="i cant remember my login pasword"))
    assert response.results[0].article == "articles/reset-password"


async def test_filters(corpus: None, staff: Stub) -> None:
    account = await staff.SearchKnowledge(
        ks.SearchKnowledgeRequest(query="error code from the api", categories=["account"], top_k=10)
    )
    assert account.results
    assert {r.category for r in account.results} == {"account"}

    tagged = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="error", tags=["api", "errors"], top_k=10))
    assert {r.article for r in tagged.results} == {"articles/api-errors-overview", "articles/auth-errors"}

    german = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="Passwort vergessen", language="de"))
    assert [r.article for r in german.results] == ["articles/passwort-zuruecksetzen"]
    assert german.results[0].language == "de"

    nothing = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="password", categories=["no-such"]))
    assert list(nothing.results) == []


async def test_best_chunks_per_article_and_top_k(corpus: None, staff: Stub) -> None:
    one = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="reset password email link", top_k=10))
    articles = [r.article for r in one.results]
    assert len(articles) == len(set(articles))
    assert one.results[0].article == "articles/reset-password"

    several = await staff.SearchKnowledge(
        ks.SearchKnowledgeRequest(query="reset password email link", top_k=10, max_chunks_per_article=3)
    )
    from_reset = [r for r in several.results if r.article == "articles/reset-password"]
    assert len(from_reset) == 3
    assert len({r.chunk_index for r in from_reset}) == 3
    assert all(r.heading.startswith("Reset your password > ") for r in from_reset)

    two = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="export", top_k=2))
    assert len(two.results) == 2


async def test_min_score_drops_weak_results(corpus: None, staff: Stub) -> None:
    everything = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query=QUESTION, top_k=10))
    assert len(everything.results) > 2
    cut = (everything.results[0].score + everything.results[-1].score) / 2
    strong = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query=QUESTION, top_k=10, min_score=cut))
    assert 0 < len(strong.results) < len(everything.results)
    assert all(r.score >= cut for r in strong.results)
    none = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query=QUESTION, min_score=1.0))
    assert list(none.results) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"query": "ok", "top_k": 21}, "top_k"),
        ({"query": "ok", "top_k": -1}, "top_k"),
        ({"query": "ok", "min_score": 1.5}, "min_score"),
        ({"query": "ok", "min_score": -0.1}, "min_score"),
        ({"query": "ok", "max_chunks_per_article": 99}, "max_chunks_per_article"),
        ({"query": "ok", "language": "not a language"}, "language"),
    ],
)
async def test_bad_search_input(staff: Stub, request_fields: dict[str, object], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.SearchKnowledge(ks.SearchKnowledgeRequest(**request_fields))  # type: ignore[arg-type]
    code, reason, message = failure(err.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert reason == "INVALID_ARGUMENT"
    assert field in message
    assert field in violations(err.value)


async def test_a_query_vector_the_caller_computed_is_used_instead_of_embedding_again(
    corpus: None, staff: Stub, knowledge: Knowledge
) -> None:
    model = knowledge.kb.model.name
    (own,) = await knowledge.kb.embedder.embed(["I forgot my password"])
    (other,) = await knowledge.kb.embedder.embed(["an error code from the export API"])

    def given(vector: object, name: str = model) -> ks.SearchKnowledgeRequest:
        return ks.SearchKnowledgeRequest(
            query="I forgot my password",
            top_k=3,
            query_embeddings=[knowledge_pb2.TextEmbedding(model=name, values=list(vector))],  # type: ignore[call-overload]
        )

    plain = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="I forgot my password", top_k=3))
    same = await staff.SearchKnowledge(given(own * 3.0))  # normalised by the service
    assert [r.article for r in same.results] == [r.article for r in plain.results]
    assert [round(r.vector_similarity, 4) for r in same.results] == [
        round(r.vector_similarity, 4) for r in plain.results
    ]
    # Proof that it is used: the vector of another question moves the passages' similarities.
    moved = await staff.SearchKnowledge(given(other))
    assert {r.article: round(r.vector_similarity, 3) for r in moved.results} != {
        r.article: round(r.vector_similarity, 3) for r in plain.results
    }
    # Another model's vector is ignored.
    ignored = await staff.SearchKnowledge(given([1.0, 0.0], "some-other-model"))
    assert [r.article for r in ignored.results] == [r.article for r in plain.results]


@pytest.mark.parametrize(
    ("values", "model", "problem"),
    [
        ([0.5] * 3, "", "must hold 384 values"),
        ([0.0] * 384, "", "must be finite and not all zero"),
        ([float("nan")] * 384, "", "must be finite and not all zero"),
        ([0.5] * 10, MULTILINGUAL_MODEL, "must hold 384 values"),
    ],
)
async def test_bad_query_vectors_are_named(
    staff: Stub, knowledge: Knowledge, values: list[float], model: str, problem: str
) -> None:
    request = ks.SearchKnowledgeRequest(
        query="password",
        query_embeddings=[knowledge_pb2.TextEmbedding(model=model or knowledge.kb.model.name, values=values)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.SearchKnowledge(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(path, text) for path, text in field_violations(err.value) if text.startswith(problem)] == [
        ("query_embeddings[0].values", ANY)
    ]


async def test_search_on_an_empty_knowledge_base_returns_nothing(staff: Stub) -> None:
    response = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query="anything at all"))
    assert list(response.results) == []


@pytest.mark.parametrize("query", ["the and of", "???", "a'b & c | !d :* <-> (", "日本語のパスワード"])
async def test_queries_with_no_words_or_tsquery_syntax_are_plain_text(corpus: None, staff: Stub, query: str) -> None:
    response = await staff.SearchKnowledge(ks.SearchKnowledgeRequest(query=query, top_k=3))
    assert len(response.results) == 3  # the vector ranker still answers; nothing is parsed as syntax


async def test_words_in_most_chunks_are_left_out_of_the_full_text_ranker(corpus: None, knowledge: Knowledge) -> None:
    store = knowledge.kb.store
    await store.pool.execute("ANALYZE chunks")
    await store.refresh_common_lexemes(0.2)
    assert "export" in store.common_lexemes  # in 3 of the 8 chunks
    assert await store.ranked_terms(query_words("Exporting legacy-schedule"), "english") == "legacy | schedule"
    # A query of common words only keeps them all.
    assert await store.ranked_terms(["export", "exports"], "english") == "export | exports"
    await store.refresh_common_lexemes(0.0)
    assert store.common_lexemes == frozenset()


async def test_re_ranking_reads_an_article_again_only_once_it_changed(
    corpus: None, staff: Stub, knowledge: Knowledge
) -> None:
    material = knowledge.kb.material
    request = ks.SearchKnowledgeRequest(query="the password reset email never arrives", top_k=1)
    first = (await staff.SearchKnowledge(request)).results[0]
    assert (first.article, first.section_heading) == ("articles/reset-password", "When the email does not arrive")
    reads = material.reads
    again = (await staff.SearchKnowledge(request)).results[0]
    assert material.reads == reads  # every candidate's sections and vectors came from memory
    assert (again.section_text, again.score) == (first.section_text, first.score)

    current = (await staff.GetArticle(ks.GetArticleRequest(name="articles/reset-password"))).article
    change = knowledge_pb2.Article(
        name=current.name, etag=current.etag, body=current.body.replace("Check spam", "Look in your spam folder")
    )
    await staff.UpdateArticle(ks.UpdateArticleRequest(article=change, update_mask=FieldMask(paths=["body"])))
    after = (await staff.SearchKnowledge(request)).results[0]
    assert material.reads == reads + 1  # the changed article alone
    assert after.article == "articles/reset-password"
    assert "Look in your spam folder" in after.section_text
    assert "Check spam" not in after.section_text
