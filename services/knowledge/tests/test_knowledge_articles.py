"""Articles through the gRPC API: CRUD, etags, pagination, idempotent creates, scopes, bad input."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from fte.knowledge.v1 import knowledge_pb2
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_knowledge.server import Knowledge
from google.protobuf.field_mask_pb2 import FieldMask
from knowledge_helpers import Client, Stub, article, failure, violations  # type: ignore[import-not-found]


async def _chunk_count(knowledge: Knowledge, slug: str) -> tuple[int, int]:
    """(chunks, vectors of the search's model) stored for an article."""
    pool = knowledge.kb.store.pool
    chunks = await pool.fetchval("SELECT count(*) FROM chunks WHERE article_slug = $1", slug)
    vectors = await pool.fetchval(
        "SELECT count(*) FROM chunk_embeddings e JOIN chunks c ON c.id = e.chunk_id "
        "WHERE c.article_slug = $1 AND e.model = $2",
        slug,
        knowledge.kb.model.name,
    )
    return chunks, vectors


async def test_create_get_update_delete(staff: Stub, knowledge: Knowledge) -> None:
    body = "# Reset\n\n## By email\n\nClick the link.\n\n## By phone\n\nCall us.\n"
    created = (
        await staff.CreateArticle(
            ks.CreateArticleRequest(
                article=article(
                    "reset-password", "Reset password", body, category="Account", tags=["Login", "login", " password "]
                )
            )
        )
    ).article
    assert created.name == "articles/reset-password"
    assert created.version == 1
    assert created.category == "account"
    assert list(created.tags) == ["login", "password"]
    assert created.language == "en"
    assert created.etag
    assert len(created.content_hash) == 64
    assert await _chunk_count(knowledge, "reset-password") == (2, 2)

    got = (await staff.GetArticle(ks.GetArticleRequest(name="articles/reset-password"))).article
    assert got == created

    change = knowledge_pb2.Article(name=created.name, etag=created.etag, body=body + "\n## In the app\n\nTap reset.\n")
    updated = (
        await staff.UpdateArticle(ks.UpdateArticleRequest(article=change, update_mask=FieldMask(paths=["body"])))
    ).article
    assert updated.version == 2
    assert updated.etag != created.etag
    assert updated.title == "Reset password"  # outside the mask: kept
    assert updated.content_hash != created.content_hash
    assert await _chunk_count(knowledge, "reset-password") == (3, 3)

    # Tags only: the chunks (and vectors) stay as they are.
    ids_before = await knowledge.kb.store.pool.fetch("SELECT id FROM chunks WHERE article_slug = 'reset-password'")
    retagged = (
        await staff.UpdateArticle(
            ks.UpdateArticleRequest(
                article=knowledge_pb2.Article(name=created.name, etag=updated.etag, tags=["sso"]),
                update_mask=FieldMask(paths=["tags"]),
            )
        )
    ).article
    assert list(retagged.tags) == ["sso"]
    ids_after = await knowledge.kb.store.pool.fetch("SELECT id FROM chunks WHERE article_slug = 'reset-password'")
    assert ids_before == ids_after

    await staff.DeleteArticle(ks.DeleteArticleRequest(name=created.name, etag=retagged.etag))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.GetArticle(ks.GetArticleRequest(name=created.name))
    assert failure(err.value)[:2] == (grpc.StatusCode.NOT_FOUND, "ARTICLE_NOT_FOUND")
    assert await _chunk_count(knowledge, "reset-password") == (0, 0)


async def test_stale_etag_is_aborted_and_changes_nothing(staff: Stub) -> None:
    created = (await staff.CreateArticle(ks.CreateArticleRequest(article=article("etag-race")))).article
    first = knowledge_pb2.Article(name=created.name, etag=created.etag, title="Editor one")
    second = knowledge_pb2.Article(name=created.name, etag=created.etag, title="Editor two")
    mask = FieldMask(paths=["title"])
    await staff.UpdateArticle(ks.UpdateArticleRequest(article=first, update_mask=mask))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.UpdateArticle(ks.UpdateArticleRequest(article=second, update_mask=mask))
    code, reason, message = failure(err.value)
    assert (code, reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert "changed since" in message
    current = (await staff.GetArticle(ks.GetArticleRequest(name=created.name))).article
    assert current.title == "Editor one"
    assert current.version == 2

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.DeleteArticle(ks.DeleteArticleRequest(name=created.name, etag=created.etag))
    assert failure(err.value)[:2] == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert (await staff.GetArticle(ks.GetArticleRequest(name=created.name))).article.version == 2


async def test_concurrent_updates_with_one_etag_let_exactly_one_win(staff: Stub) -> None:
    created = (await staff.CreateArticle(ks.CreateArticleRequest(article=article("etag-concurrent")))).article
    mask = FieldMask(paths=["body"])
    calls = [
        staff.UpdateArticle(
            ks.UpdateArticleRequest(
                article=knowledge_pb2.Article(
                    name=created.name, etag=created.etag, body=f"# Version {i}\n\nText {i}.\n"
                ),
                update_mask=mask,
            )
        )
        for i in range(4)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    wins = [o for o in outcomes if isinstance(o, ks.UpdateArticleResponse)]
    losses = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(wins) == 1
    assert len(losses) == 3
    assert all(e.code() == grpc.StatusCode.ABORTED for e in losses)
    current = (await staff.GetArticle(ks.GetArticleRequest(name=created.name))).article
    assert current.version == 2
    assert current.body == wins[0].article.body


async def test_update_with_unchanged_content_keeps_version(staff: Stub) -> None:
    created = (await staff.CreateArticle(ks.CreateArticleRequest(article=article("same-again")))).article
    same = knowledge_pb2.Article(name=created.name, etag=created.etag, title=created.title)
    result = (
        await staff.UpdateArticle(ks.UpdateArticleRequest(article=same, update_mask=FieldMask(paths=["title"])))
    ).article
    assert result.version == 1
    assert result.etag == created.etag


async def test_create_is_idempotent_by_request_id_and_rejects_duplicates(staff: Stub) -> None:
    request_id = str(uuid.uuid4())
    first = await staff.CreateArticle(ks.CreateArticleRequest(article=article("idem"), request_id=request_id))
    again = await staff.CreateArticle(ks.CreateArticleRequest(article=article("idem"), request_id=request_id))
    assert again.article == first.article
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.CreateArticle(ks.CreateArticleRequest(article=article("idem")))
    assert failure(err.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "ARTICLE_EXISTS")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.CreateArticle(ks.CreateArticleRequest(article=article("idem-other"), request_id=request_id))
    assert failure(err.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


async def test_list_paginates_with_filters_and_total(staff: Stub) -> None:
    for i in range(7):
        category = "billing" if i % 2 else "account"
        await staff.CreateArticle(
            ks.CreateArticleRequest(article=article(f"page-{i}", category=category, tags=["t"] if i < 3 else []))
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await staff.ListArticles(ks.ListArticlesRequest(page_size=3, page_token=token))
        assert page.total_size == 7
        seen += [a.slug for a in page.articles]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(f"page-{i}" for i in range(7))

    billing = await staff.ListArticles(ks.ListArticlesRequest(category="billing", page_size=2))
    assert billing.total_size == 3
    assert [a.slug for a in billing.articles] == ["page-1", "page-3"]
    rest = await staff.ListArticles(
        ks.ListArticlesRequest(category="billing", page_size=2, page_token=billing.next_page_token)
    )
    assert [a.slug for a in rest.articles] == ["page-5"]
    assert not rest.next_page_token
    tagged = await staff.ListArticles(ks.ListArticlesRequest(tag="t"))
    assert [a.slug for a in tagged.articles] == ["page-0", "page-1", "page-2"]

    # A token is bound to its filters.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.ListArticles(ks.ListArticlesRequest(page_token=billing.next_page_token))
    assert failure(err.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.ListArticles(ks.ListArticlesRequest(page_size=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_scopes(client_for: Client) -> None:
    reader = client_for("kb-reader")
    agent = client_for("agent")
    gateway = client_for("gateway")
    staff = client_for("staff")
    await staff.CreateArticle(ks.CreateArticleRequest(article=article("scoped")))
    # kb.read may read and search.
    assert (await reader.GetArticle(ks.GetArticleRequest(name="articles/scoped"))).article.slug == "scoped"
    assert (await agent.ListArticles(ks.ListArticlesRequest())).total_size == 1
    assert (await reader.SearchKnowledge(ks.SearchKnowledgeRequest(query="scoped"))).results
    # ...but not write.
    writes = [
        reader.CreateArticle(ks.CreateArticleRequest(article=article("nope"))),
        reader.DeleteArticle(ks.DeleteArticleRequest(name="articles/scoped")),
        reader.BatchImportArticles(ks.BatchImportArticlesRequest(articles=[article("nope")])),
        agent.UpdateArticle(
            ks.UpdateArticleRequest(article=knowledge_pb2.Article(name="articles/scoped", etag="x", title="t"))
        ),
    ]
    for call in writes:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # No kb scope at all.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.SearchKnowledge(ks.SearchKnowledgeRequest(query="scoped"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await staff.GetArticle(ks.GetArticleRequest(name="articles/scoped"))).article.version == 1


async def test_bad_article_input_is_rejected_with_field_violations(staff: Stub, knowledge: Knowledge) -> None:
    cases = [
        (article("Bad Slug!"), "article.slug"),
        (knowledge_pb2.Article(slug="no-title", body="text"), "article.title"),
        (knowledge_pb2.Article(slug="no-body", title="No body"), "article.body"),
        (article("long-title", title="x" * 301), "article.title"),
        (article("big-body", body="x" * (1024 * 1024 + 1)), "article.body"),
        (article("bad-lang", language="english please"), "article.language"),
        (article("bad-url", url="javascript:alert(1)"), "article.url"),
        (article("bad-tag", tags=["two words"]), "article.tags"),
    ]
    for bad, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await staff.CreateArticle(ks.CreateArticleRequest(article=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.CreateArticle(ks.CreateArticleRequest(article=article("bad-request-id"), request_id="not-a-uuid"))
    assert "request_id" in violations(err.value)
    assert await knowledge.kb.store.pool.fetchval("SELECT count(*) FROM articles") == 0


async def test_bad_names_masks_and_unknown_articles(staff: Stub) -> None:
    created = (await staff.CreateArticle(ks.CreateArticleRequest(article=article("masked")))).article
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.GetArticle(ks.GetArticleRequest(name="masked"))
    assert failure(err.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.GetArticle(ks.GetArticleRequest(name="articles/missing"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.DeleteArticle(ks.DeleteArticleRequest(name="articles/missing"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.UpdateArticle(
            ks.UpdateArticleRequest(
                article=knowledge_pb2.Article(name=created.name, etag=created.etag, slug="renamed"),
                update_mask=FieldMask(paths=["slug"]),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"article.slug", "update_mask"} <= set(violations(err.value))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.UpdateArticle(
            ks.UpdateArticleRequest(article=knowledge_pb2.Article(name=created.name, title="No etag"))
        )
    assert "article.etag" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.UpdateArticle(
            ks.UpdateArticleRequest(
                article=knowledge_pb2.Article(name=created.name, etag=created.etag, body=""),
                update_mask=FieldMask(paths=["body"]),
            )
        )
    assert "article.body" in violations(err.value)
    assert (await staff.GetArticle(ks.GetArticleRequest(name=created.name))).article == created


async def test_batch_import_creates_updates_and_skips(staff: Stub, knowledge: Knowledge) -> None:
    first = [article("imp-a"), article("imp-b"), article("imp-c")]
    result = await staff.BatchImportArticles(ks.BatchImportArticlesRequest(articles=first))
    created = ks.ImportResult.OUTCOME_CREATED
    assert [(r.slug, r.article, r.outcome) for r in result.results] == [
        ("imp-a", "articles/imp-a", created),
        ("imp-b", "articles/imp-b", created),
        ("imp-c", "articles/imp-c", created),
    ]
    changed = [article("imp-a"), article("imp-b", body="# B\n\nNew text.\n"), article("imp-d")]
    result = await staff.BatchImportArticles(ks.BatchImportArticlesRequest(articles=changed))
    assert [r.outcome for r in result.results] == [
        ks.ImportResult.OUTCOME_UNCHANGED,
        ks.ImportResult.OUTCOME_UPDATED,
        ks.ImportResult.OUTCOME_CREATED,
    ]
    b = (await staff.GetArticle(ks.GetArticleRequest(name="articles/imp-b"))).article
    assert b.version == 2
    assert "New text." in b.body
    assert (await staff.GetArticle(ks.GetArticleRequest(name="articles/imp-a"))).article.version == 1

    # One bad article fails the whole call before anything is written.
    bad = [article("imp-e"), knowledge_pb2.Article(slug="imp-f", title="No body"), article("imp-e")]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.BatchImportArticles(ks.BatchImportArticlesRequest(articles=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"articles[1].body", "articles[2].slug"} <= set(violations(err.value))
    assert await knowledge.kb.store.get("imp-e") is None
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await staff.BatchImportArticles(ks.BatchImportArticlesRequest(articles=[]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
