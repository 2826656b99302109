"""What a quota costs a call, next to the rate limit's check measured in the same run.

The hot path (`QuotaCounter.acquire`, run on every call of a principal with a quota) is timed in
process against the per-principal rate limit's token bucket (`PerClientLimits.acquire`, which
every call already pays); a principal without a quota is timed too (a dictionary miss). The
background flush (one statement for every principal's day and month rows) is timed against an
embedded PostgreSQL, next to the alternative of an UPSERT on every call.

    .venv/bin/python bench/quota_check.py [--calls 200000] [--flushes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from fte_runtime.db import apply_migrations, create_pool
from fte_runtime.quota import QuotaCounter, QuotaStore
from fte_runtime.ratelimit import PerClientLimits
from fte_runtime.settings import DatabaseSettings, Quota
from fte_stack.postgres import PostgresServer
from fte_stack.procs import free_port, scratch_dir
from pydantic import SecretStr

SCHEMA = "identity"  # any service's schema: each has the same quota_usage table


def per_call_ns(check: Callable[[], object], calls: int, rounds: int = 5) -> float:
    """Median over `rounds` of the mean nanoseconds one call to `check` takes."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(calls):
            check()
        results.append((time.perf_counter_ns() - started) / calls)
    return statistics.median(results)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--flushes", type=int, default=200)
    args = parser.parse_args()

    with scratch_dir("fte-bench-quota-") as root:
        postgres = PostgresServer(root / "postgres", free_port())
        await postgres.start()
        try:
            dsn = await postgres.create_database("bench_quota")
            await apply_migrations(dsn, SCHEMA, importlib.resources.files("fte_identity") / "migrations")
            pool = await create_pool(DatabaseSettings(database_url=SecretStr(dsn)), SCHEMA, application_name="bench")
            try:
                store = QuotaStore(pool)
                never = Quota(per_day=10**12, per_month=10**12)
                counter = QuotaCounter({"team": never}, store, flush_calls=10**12)
                limits = PerClientLimits({"team": (10**12, 10**9)})

                rate_ns = per_call_ns(lambda: limits.acquire("team"), args.calls)
                quota_ns = per_call_ns(lambda: counter.acquire("team"), args.calls)
                none_ns = per_call_ns(lambda: counter.acquire("nobody"), args.calls)

                flush_ms: list[float] = []
                for _ in range(args.flushes):
                    counter.acquire("team")
                    started = time.perf_counter()
                    await counter.flush()
                    flush_ms.append((time.perf_counter() - started) * 1000)
                today = datetime.now(UTC).date()
                upsert_ms: list[float] = []
                for _ in range(args.flushes):
                    started = time.perf_counter()
                    await store.add({("per-call", "day", today): 1, ("per-call", "month", today.replace(day=1)): 1})
                    upsert_ms.append((time.perf_counter() - started) * 1000)
            finally:
                await pool.close()
        finally:
            await postgres.stop()

    flush, upsert = statistics.median(flush_ms), statistics.median(upsert_ms)
    print(f"rate limit check (baseline)       {rate_ns:8.0f} ns/call")
    print(f"quota check, principal with quota {quota_ns:8.0f} ns/call  ({quota_ns / rate_ns:.2f}x the rate limit's)")
    print(f"quota check, principal without    {none_ns:8.0f} ns/call  ({none_ns / rate_ns:.2f}x)")
    p99 = sorted(flush_ms)[-max(1, len(flush_ms) // 100)]
    per_call = upsert * 1e6 / rate_ns
    print(f"flush (day + month, add and read)  {flush:8.3f} ms median, p99 {p99:.3f} ms")
    print(f"UPSERT per call instead            {upsert:8.3f} ms median, {per_call:.0f}x the rate limit's check")
    print("with the defaults a replica flushes once a second (or per 100 calls) per service, whatever the call rate")


if __name__ == "__main__":
    asyncio.run(main())
