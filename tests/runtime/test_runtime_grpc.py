"""The gRPC runtime: auth, scopes, error mapping, deadline propagation, health, Envoy in front."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from fte.knowledge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_client.v1.errors import status_details
from fte_runtime.auth import principal_rate_limits
from fte_runtime.errors import error_info, field_violations
from fte_runtime.grpc_client import connect
from fte_runtime.grpc_server import GrpcServer
from fte_runtime.settings import GrpcServerSettings, RateLimit, TokenGrant
from fte_stack.envoy import EnvoyProxy
from fte_stack.procs import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import TOKENS, RuntimeProbeServicer, start_probe

Probe = tuple[GrpcServer, RuntimeProbeServicer]


async def get(target: str, name: str, token: str | None, timeout: float | None = None) -> str:
    async with connect(target, token=token) as channel:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        reply = await stub.GetArticle(knowledge_service_pb2.GetArticleRequest(name=name), timeout=timeout)
        return str(reply.article.name)


async def error_of(target: str, name: str, token: str | None, timeout: float | None = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(target, name, token, timeout)
    return caught.value


def reason(err: grpc.aio.AioRpcError) -> str:
    info = error_info(err)
    assert info is not None, "the error carries no google.rpc.Status with an ErrorInfo"
    assert info.domain == "knowledge.fte"
    return str(info.reason)


async def wait_routable(via: str) -> None:
    for _ in range(100):
        try:
            await get(via, "articles/a", "reader-token")
            return
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        await asyncio.sleep(0.1)


def target(probe: Probe) -> str:
    return f"127.0.0.1:{probe[0].port}"


async def test_good_token_with_scope_is_served(probe: Probe) -> None:
    assert await get(target(probe), "articles/a", "reader-token") == "articles/a"


async def test_missing_token_is_unauthenticated(probe: Probe) -> None:
    err = await error_of(target(probe), "articles/a", None)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(err) == "TOKEN_MISSING"


async def test_unknown_token_is_unauthenticated(probe: Probe) -> None:
    err = await error_of(target(probe), "articles/a", "forged")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(err) == "TOKEN_INVALID"


async def test_token_without_scope_is_denied(probe: Probe) -> None:
    err = await error_of(target(probe), "articles/a", "nobody-token")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(err) == "MISSING_SCOPE"
    assert "kb.read" in (err.details() or "")


async def test_method_without_configured_scope_is_denied(probe: Probe) -> None:
    async with connect(target(probe), token="reader-token") as channel:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListArticles(knowledge_service_pb2.ListArticlesRequest())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(caught.value) == "METHOD_NOT_ALLOWED"


async def test_invalid_request_gets_field_violations(probe: Probe) -> None:
    err = await error_of(target(probe), "not-a-name", "reader-token")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == [("name", "must look like 'articles/{article}'")]


async def test_domain_error_maps_to_its_code(probe: Probe) -> None:
    err = await error_of(target(probe), "articles/missing", "reader-token")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert reason(err) == "ARTICLE_NOT_FOUND"


async def test_unexpected_error_is_internal_without_internals(probe: Probe) -> None:
    err = await error_of(target(probe), "articles/crash", "reader-token")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "postgres" not in str(err.debug_error_string()) + str(err.details())


async def test_caller_deadline_is_enforced(probe: Probe) -> None:
    err = await error_of(target(probe), "articles/slow", "reader-token", timeout=0.3)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_remaining_deadline_is_propagated_downstream() -> None:
    front, front_servicer = await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=TOKENS))
    back, back_servicer = await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=TOKENS))
    front_servicer.downstream = f"127.0.0.1:{back.port}"
    try:
        assert await get(f"127.0.0.1:{front.port}", "articles/forward", "reader-token", timeout=30.0) == "articles/leaf"
        at_front, at_back = front_servicer.seen_remaining[-1], back_servicer.seen_remaining[-1]
        # The front saw the caller's 30 s, not its 99 s default; the back saw what was left of it,
        # not the client's 5 s default (give or take grpc-timeout's rounding).
        assert 20.0 < at_front <= 30.5
        assert 20.0 < at_back <= at_front + 0.1
    finally:
        await front.stop()
        await back.stop()


async def test_health_is_public_and_goes_not_serving_on_shutdown() -> None:
    server, _ = await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=TOKENS, shutdown_grace_seconds=1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="fte.knowledge.v1.KnowledgeService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.health.enter_graceful_shutdown()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.stop()


async def test_calls_through_envoy_keep_status_and_details(probe: Probe, tmp_path: Path) -> None:
    envoy = EnvoyProxy(free_port(), free_port(), {"knowledge": probe[0].port}, tmp_path)
    await envoy.start()
    try:
        # Envoy routes once its first active health check of the upstream has passed.
        await wait_routable(envoy.target)
        assert await get(envoy.target, "articles/a", "reader-token") == "articles/a"
        err = await error_of(envoy.target, "articles/missing", "reader-token")
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert reason(err) == "ARTICLE_NOT_FOUND"
        err = await error_of(envoy.target, "articles/a", "nobody-token")
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await envoy.stop()


async def test_concurrent_calls_are_isolated(probe: Probe) -> None:
    names = [f"articles/n{i}" for i in range(50)]
    results = await asyncio.gather(*(get(target(probe), n, "reader-token") for n in names))
    assert results == names


async def test_principal_over_its_rate_limit_is_refused_with_retry_info(probe: Probe) -> None:
    # The probe's own fixture is shared: a fresh server gives the script a full bucket.
    server, _ = await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=TOKENS))
    try:
        where = f"127.0.0.1:{server.port}"
        for _ in range(3):
            assert await get(where, "articles/a", "script-token") == "articles/a"
        err = await error_of(where, "articles/a", "script-token")
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(err) == "RATE_LIMITED"
        delay = status_details(err).retry_delay
        assert delay is not None
        assert 0.5 < delay <= 1.0
        # Another principal is not slowed by the script's empty bucket.
        for _ in range(10):
            assert await get(where, "articles/a", "reader-token") == "articles/a"
        await asyncio.sleep(delay)
        assert await get(where, "articles/a", "script-token") == "articles/a"
    finally:
        await server.stop()


def test_tokens_of_one_principal_must_agree_on_its_rate_limit() -> None:
    grants = {
        "a": TokenGrant(principal="team", rate_limit=RateLimit(requests_per_minute=60, burst=3)),
        "b": TokenGrant(principal="team", rate_limit=RateLimit(requests_per_minute=120, burst=3)),
    }
    with pytest.raises(ValueError, match="different rate limits"):
        principal_rate_limits(grants)
    assert principal_rate_limits({"a": grants["a"], "c": TokenGrant(principal="other")}) == {"team": (60.0, 3)}
