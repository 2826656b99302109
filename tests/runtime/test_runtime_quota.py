"""Quotas per principal and UTC day / month, counted in PostgreSQL: the real identity service on a
fresh database, stopped and started again, and two of its servers sharing one database."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from fte.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from fte_client.v1.errors import status_details
from fte_identity.server import Identity, build
from fte_identity.settings import IdentitySettings
from fte_runtime.auth import principal_quotas
from fte_runtime.grpc_client import connect
from fte_runtime.grpc_server import GrpcServer
from fte_runtime.quota import Key, QuotaCounter, QuotaStore
from fte_runtime.settings import GrpcServerSettings, Quota, TokenGrant
from prometheus_client import REGISTRY
from pydantic import SecretStr

from .conftest import TOKENS, start_probe

ROOT = Path(__file__).resolve().parents[2]
GRANTS = {
    "trial-token": TokenGrant(principal="trial", scopes=["identity.read"], quota=Quota(per_day=3)),
    "monthly-token": TokenGrant(principal="monthly", scopes=["identity.read"], quota=Quota(per_day=100, per_month=2)),
    "free-token": TokenGrant(principal="free", scopes=["identity.read"]),
}
NewDatabase = Callable[[], Awaitable[str]]


@asynccontextmanager
async def identity(dsn: str, **overrides: Any) -> AsyncIterator[tuple[Identity, str]]:
    """The identity service's API on `dsn` (no outbox relay: no broker is needed)."""
    settings = IdentitySettings(
        database_url=SecretStr(dsn),
        grpc_port=0,
        auth_tokens=GRANTS,
        shutdown_grace_seconds=0.5,
        kafka_bootstrap="127.0.0.1:9",
        **overrides,
    )
    app = await build(settings)
    port = await app.server.start()
    try:
        yield app, f"127.0.0.1:{port}"
    finally:
        await app.server.stop()
        await app.relay.close()
        await app.pool.close()


async def list_customers(target: str, token: str) -> grpc.aio.AioRpcError | None:
    """None when the call is served, else its error."""
    async with connect(target, token=token) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        try:
            await stub.ListCustomers(identity_service_pb2.ListCustomersRequest(page_size=1))
        except grpc.aio.AioRpcError as err:
            return err
    return None


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Waits (10 s at most) for what a background flush does."""
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110 - polling another task's and the database's state
            await asyncio.sleep(0.02)


def knows(app: Identity, principal: str, used: dict[str, int]) -> Callable[[], Awaitable[bool]]:
    """Whether `app`'s counter has read `used` back for `principal`."""

    async def check() -> bool:
        return app.server.quotas is not None and app.server.quotas.used(principal) == used

    return check


def next_midnight() -> datetime:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)


async def usage(dsn: str, principal: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT period, used FROM identity.quota_usage WHERE principal = $1", principal)
    finally:
        await conn.close()
    return {r["period"]: r["used"] for r in rows}


async def test_a_principal_over_its_daily_quota_waits_for_the_next_utc_midnight(new_database: NewDatabase) -> None:
    dsn = await new_database()
    async with identity(dsn) as (_, target):
        for _ in range(3):
            assert await list_customers(target, "trial-token") is None
        err = await list_customers(target, "trial-token")
        assert err is not None
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = status_details(err)
        resets = next_midnight()
        assert (details.reason, details.domain) == ("QUOTA_EXCEEDED", "identity.fte")
        assert details.metadata == {
            "principal": "trial",
            "window": "day",
            "limit": "3",
            "resets_at": resets.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        assert details.retry_delay is not None
        assert abs(details.retry_delay - (resets - datetime.now(UTC)).total_seconds()) < 5
        assert "daily quota of 3 calls" in (err.details() or "")
        # A principal without a quota is not affected, however much it calls.
        for _ in range(20):
            assert await list_customers(target, "free-token") is None
    # Stopping added the counts to the database; refused calls are not counted.
    assert await usage(dsn, "trial") == {"day": 3}
    assert await usage(dsn, "free") == {}

    # A restart reads the count back: the quota is still used up.
    async with identity(dsn) as (_, target):
        err = await list_customers(target, "trial-token")
        assert err is not None
        assert status_details(err).reason == "QUOTA_EXCEEDED"
        assert await list_customers(target, "free-token") is None


async def test_a_monthly_quota_runs_out_before_the_daily_one(new_database: NewDatabase) -> None:
    async with identity(await new_database()) as (_, target):
        for _ in range(2):
            assert await list_customers(target, "monthly-token") is None
        err = await list_customers(target, "monthly-token")
    assert err is not None
    details = status_details(err)
    today = datetime.now(UTC).date()
    first = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    assert details.reason == "QUOTA_EXCEEDED"
    assert (details.metadata["window"], details.metadata["limit"]) == ("month", "2")
    assert details.metadata["resets_at"] == f"{first.isoformat()}T00:00:00Z"
    assert details.retry_delay is not None
    expected = (datetime(first.year, first.month, 1, tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert abs(details.retry_delay - expected) < 5


def sample(name: str, principal: str, window: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"principal": principal, "window": window})


async def test_two_servers_sharing_the_database_share_the_quota(new_database: NewDatabase) -> None:
    dsn = await new_database()
    fast = {"quota_flush_seconds": 0.05}
    refused_before = sample("quota_refused_total", "trial", "day") or 0.0
    async with identity(dsn, **fast) as (a, at_a), identity(dsn, **fast) as (b, at_b):
        for _ in range(2):
            assert await list_customers(at_a, "trial-token") is None
        # Once a has added its calls and b has read them back, b serves the one call left.
        await until(knows(b, "trial", {"day": 2}))
        # The metrics show what the database holds, whichever replica read it last.
        assert sample("quota_used_calls", "trial", "day") == 2
        assert sample("quota_limit_calls", "trial", "day") == 3
        assert sample("quota_limit_calls", "monthly", "month") == 2
        assert await list_customers(at_b, "trial-token") is None
        err = await list_customers(at_b, "trial-token")
        assert err is not None
        assert status_details(err).reason == "QUOTA_EXCEEDED"
        assert sample("quota_refused_total", "trial", "day") == refused_before + 1
        await until(knows(a, "trial", {"day": 3}))
        assert sample("quota_used_calls", "trial", "day") == 3
        err = await list_customers(at_a, "trial-token")
        assert err is not None
        assert status_details(err).reason == "QUOTA_EXCEEDED"
    assert await usage(dsn, "trial") == {"day": 3}


async def flushed(dsn: str, principal: str, used: dict[str, int]) -> bool:
    return await usage(dsn, principal) == used


def operations_sql() -> list[str]:
    """The statements of docs/operations.md's quota example, for identity and the test's principal."""
    [block] = re.findall(r"```sql\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(), re.S)
    text = block.replace("knowledge.", "identity.").replace("'team-script'", "'trial'")
    return [stmt.strip() for stmt in re.sub(r"--[^\n]*", "", text).split(";") if stmt.strip()]


async def test_the_operations_guide_shows_usage_and_gives_the_allowance_back(new_database: NewDatabase) -> None:
    dsn = await new_database()
    select, delete = operations_sql()
    async with identity(dsn, quota_flush_seconds=0.05) as (app, target):
        for _ in range(3):
            assert await list_customers(target, "trial-token") is None
        assert await list_customers(target, "trial-token") is not None
        await until(lambda: flushed(dsn, "trial", {"day": 3}))
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(select)
            assert [(r["principal"], r["period"], r["used"]) for r in rows] == [("trial", "day", 3)]
            await conn.execute(delete)
        finally:
            await conn.close()
        await until(knows(app, "trial", {"day": 0}))
        assert await list_customers(target, "trial-token") is None


async def test_the_windows_roll_over_at_utc_midnight_and_month_end(new_database: NewDatabase) -> None:
    dsn = await new_database()
    async with identity(dsn) as (app, _):
        now = [datetime(2026, 1, 31, 23, 59, 59, 500_000, tzinfo=UTC).timestamp()]
        store = QuotaStore(app.pool)
        counter = QuotaCounter({"p": Quota(per_day=1, per_month=10)}, store, clock=lambda: now[0])
        assert counter.acquire("p") is None
        refused = counter.acquire("p")
        assert refused is not None
        assert (refused.period, refused.limit) == ("day", 1)
        assert refused.resets_at == datetime(2026, 2, 1, tzinfo=UTC)
        assert refused.retry_after == pytest.approx(0.5)
        await counter.flush()
        now[0] += 1.0  # 00:00:00.5 on February 1st: a new day and a new month
        assert counter.acquire("p") is None
        assert counter.used("p") == {"day": 1, "month": 1}
        await counter.flush()
        assert counter.acquire("nobody") is None  # no quota: never counted
        rows = await app.pool.fetch("SELECT period, starts, used FROM quota_usage WHERE principal = 'p'")
    assert sorted((r["period"], r["starts"], r["used"]) for r in rows) == [
        ("day", date(2026, 1, 31), 1),
        ("day", date(2026, 2, 1), 1),
        ("month", date(2026, 1, 1), 1),
        ("month", date(2026, 2, 1), 1),
    ]


async def test_a_quota_without_a_database_to_count_it_stops_the_start() -> None:
    grants = {**TOKENS, "trial-token": GRANTS["trial-token"]}
    with pytest.raises(RuntimeError, match=r"trial have quotas, but knowledge\.fte keeps no quota counts"):
        await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=grants))
    # The probe of the other runtime tests has no quota principal: nothing is counted.
    server, _ = await start_probe(GrpcServerSettings(grpc_port=0, auth_tokens=TOKENS))
    try:
        assert isinstance(server, GrpcServer)
        assert server.quotas is None
    finally:
        await server.stop()


def test_tokens_of_one_principal_must_agree_on_its_quota() -> None:
    grants = {
        "a": TokenGrant(principal="team", quota=Quota(per_day=10)),
        "b": TokenGrant(principal="team", quota=Quota(per_day=20)),
    }
    with pytest.raises(ValueError, match="different quotas"):
        principal_quotas(grants)
    assert principal_quotas({"a": grants["a"], "c": TokenGrant(principal="other")}) == {"team": Quota(per_day=10)}
    with pytest.raises(ValueError, match="per_day, per_month or both"):
        Quota()


def test_every_grpc_service_counts_quotas_in_its_own_schema_with_the_same_table() -> None:
    files = {
        svc: sorted((ROOT / "services" / svc / f"fte_{svc}" / "migrations").glob("*_quota_usage.sql"))
        for svc in ("knowledge", "identity", "notifier", "agent")
    }
    assert all(len(found) == 1 for found in files.values()), files
    texts = {found[0].read_text() for found in files.values()}
    assert len(texts) == 1, "the services' quota_usage migrations differ"
    for svc in files:
        server = (ROOT / "services" / svc / f"fte_{svc}" / "server.py").read_text()
        assert "self.keep_quotas(" in server, f"{svc} does not count quotas"


class SlowStore(QuotaStore):
    """The real store, each addition held until `go` is set: a database that is slow to answer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.go = asyncio.Event()
        self.adding = asyncio.Event()

    async def add(self, deltas: Mapping[Key, int], read: Iterable[Key] = ()) -> dict[Key, int]:
        self.adding.set()
        await self.go.wait()
        return await super().add(deltas, read)


async def test_calls_being_flushed_still_count(new_database: NewDatabase) -> None:
    async with identity(await new_database()) as (app, _):
        store = SlowStore(app.pool)
        store.go.set()
        counter = QuotaCounter({"p": Quota(per_day=3)}, store)
        await counter.flush()
        store.go.clear()
        assert counter.acquire("p") is None
        assert counter.acquire("p") is None
        flushing = asyncio.create_task(counter.flush())
        await store.adding.wait()
        # While the database has not answered, the two calls it is being sent are still counted.
        assert counter.acquire("p") is None
        assert counter.acquire("p") is not None
        store.go.set()
        await flushing
        assert counter.used("p") == {"day": 3}
        assert counter.acquire("p") is not None
        await counter.flush()
        rows = await app.pool.fetch("SELECT used FROM quota_usage WHERE principal = 'p'")
    assert [r["used"] for r in rows] == [3]
