"""The client against the real stack (every service behind Envoy): pagination, typed errors,
deadlines, a principal held to its rate limit while another is not, and one past its quota."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fte.agent.v1 import agent_service_pb2 as ags
from fte.identity.v1 import identity_service_pb2 as ids
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_client import v1
from fte_stack.stack import Stack


def client_as(stack: Stack, principal: str, timeout: float = v1.DEFAULT_TIMEOUT_SECONDS) -> v1.Client:
    return v1.connect(f"127.0.0.1:{stack.ports['envoy']}", token=stack.tokens[principal], timeout=timeout)


async def test_articles_are_listed_over_every_page(full_stack: Stack) -> None:
    async with client_as(full_stack, "kb-reader") as client:
        first = await client.knowledge.ListArticles(ks.ListArticlesRequest(page_size=10))
        assert first.total_size > 20, "the sample knowledge base is loaded"
        seen = [page async for page in v1.pages(client.knowledge.ListArticles, ks.ListArticlesRequest(page_size=10))]
        names = [
            a.name
            async for a in v1.paginate(
                client.knowledge.ListArticles, ks.ListArticlesRequest(page_size=10), lambda r: r.articles
            )
        ]
    assert len(seen) == -(-first.total_size // 10)
    assert len(names) == len(set(names)) == first.total_size
    assert names[:10] == [a.name for a in first.articles]


async def test_a_missing_article_is_a_typed_error_with_its_reason(full_stack: Stack) -> None:
    async with client_as(full_stack, "kb-reader") as client:
        with pytest.raises(v1.NotFoundError) as caught:
            await client.knowledge.GetArticle(ks.GetArticleRequest(name="articles/no-such-article"))
        assert caught.value.reason == "ARTICLE_NOT_FOUND"
        assert caught.value.domain == "knowledge.fte"
        # A scope the token lacks: the identity service refuses it.
        with pytest.raises(v1.PermissionDeniedError) as denied:
            await client.identity.ListCustomers(ids.ListCustomersRequest())
        assert denied.value.reason == "MISSING_SCOPE"
        assert denied.value.metadata == {"scope": "identity.read"}
        with pytest.raises(v1.InvalidArgumentError) as invalid:
            await client.knowledge.ListArticles(ks.ListArticlesRequest(page_token="not-a-token"))
        assert invalid.value.reason == "INVALID_PAGE_TOKEN"


async def test_a_call_past_its_deadline_is_deadline_exceeded(full_stack: Stack) -> None:
    # The client's default deadline (here 1 ms) and a call's own timeout both apply.
    async with client_as(full_stack, "kb-reader", timeout=0.001) as client:
        with pytest.raises(v1.DeadlineExceededError) as caught:
            await client.knowledge.SearchKnowledge(ks.SearchKnowledgeRequest(query="reset my password"))
        assert caught.value.reason == "DEADLINE_EXCEEDED"
        found = await client.knowledge.SearchKnowledge(ks.SearchKnowledgeRequest(query="reset my password"), timeout=30)
        assert found.results


async def test_a_principal_over_its_rate_limit_waits_while_another_is_served(full_stack: Stack) -> None:
    # team-script: 60 a minute, burst 5 (fte_stack.services.RATE_LIMITS).
    async with client_as(full_stack, "team-script") as script, client_as(full_stack, "kb-reader") as reader:
        request = ks.GetArticleRequest(name="articles/no-such-article")
        limited: list[v1.ResourceExhaustedError] = []
        for _ in range(12):
            try:
                await script.knowledge.GetArticle(request)
            except v1.NotFoundError:
                pass
            except v1.ResourceExhaustedError as refused:
                limited.append(refused)
        assert 6 <= len(limited) <= 8, "the burst of 5 is served, the rest refused"
        err = limited[-1]
        assert isinstance(err, v1.RateLimitedError)
        assert err.reason == "RATE_LIMITED"
        assert err.domain == "knowledge.fte"
        assert err.retry_delay is not None
        assert 0 < err.retry_delay <= 1.0
        # Another principal is served as usual meanwhile.
        for _ in range(10):
            with pytest.raises(v1.NotFoundError):
                await reader.knowledge.GetArticle(request)
        # Each service keeps its own buckets: the script still reads tickets.
        await script.tickets.ListTickets(ags.ListTicketsRequest(page_size=1))
        await asyncio.sleep(err.retry_delay)
        with pytest.raises(v1.NotFoundError):
            await script.knowledge.GetArticle(request)


async def test_a_principal_past_its_daily_quota_gets_quota_exceeded_until_utc_midnight(full_stack: Stack) -> None:
    # trial-team: 5 calls a UTC day in each service (fte_stack.services.QUOTAS); this test spends
    # its identity ones.
    async with client_as(full_stack, "trial-team") as trial, client_as(full_stack, "kb-reader") as reader:
        request = ids.ListCustomersRequest(page_size=1)
        for _ in range(5):
            await trial.identity.ListCustomers(request)
        with pytest.raises(v1.QuotaExceededError) as caught:
            await trial.identity.ListCustomers(request)
        err = caught.value
        assert isinstance(err, v1.ResourceExhaustedError)
        assert (err.reason, err.domain) == ("QUOTA_EXCEEDED", "identity.fte")
        assert (err.window, err.limit) == ("day", 5)
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
        assert err.resets_at == midnight
        assert err.retry_delay is not None
        assert abs(err.retry_delay - (midnight - datetime.now(UTC)).total_seconds()) < 10
        # Refused again at once: the client does not retry it, and neither does Envoy.
        with pytest.raises(v1.QuotaExceededError):
            await trial.identity.ListCustomers(request)
        # Its quota of another service is its own (the client README's example may have spent its
        # knowledge calls already: then knowledge's refusal is knowledge's own), and a principal's
        # quota is not another's.
        refused: v1.QuotaExceededError | None = None
        try:
            await trial.knowledge.ListArticles(ks.ListArticlesRequest(page_size=1))
        except v1.QuotaExceededError as other:
            refused = other
        assert refused is None or (refused.domain, refused.window, refused.limit) == ("knowledge.fte", "day", 5)
        await reader.knowledge.ListArticles(ks.ListArticlesRequest(page_size=1))
