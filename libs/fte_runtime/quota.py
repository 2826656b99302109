"""Request quotas per principal and UTC calendar day / month, counted in PostgreSQL so they hold
across a service's replicas and restarts.

The hot path never waits on the database. Each replica counts its own calls in memory on top of
the last total it read; a background flush adds them to the shared rows (the `quota_usage` table
of the service's own schema, created by its migrations) and reads back what the other replicas
added, in one round trip, every `flush_seconds` or sooner once `flush_calls` calls are waiting.
So a single replica is exact, and with R replicas a principal can overshoot by what the other
replicas admitted since their last flush: at most about (R - 1) x `flush_calls` calls, fewer when
its rate limit admits less in one interval. A replica killed without its stop loses the calls it
had not flushed yet (one interval's at most), in the caller's favour. While the database is
unreachable each replica goes on enforcing with the totals it last read plus its own calls, and
adds them once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import asyncpg

from fte_runtime.metrics import QUOTA_LIMIT, QUOTA_REFUSED, QUOTA_USED
from fte_runtime.settings import Quota
from fte_runtime.tasks import cancel_all

log = logging.getLogger("fte.quota")

Period = Literal["day", "month"]
# (principal, period, the period's first day)
Key = tuple[str, Period, date]

_ADD = """
WITH added AS (
    INSERT INTO quota_usage AS q (principal, period, starts, used)
    SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[])
    ON CONFLICT (principal, period, starts) DO UPDATE SET used = q.used + EXCLUDED.used, updated_at = now()
    RETURNING q.principal, q.period, q.starts, q.used
)
SELECT principal, period, starts, used FROM added
UNION ALL
SELECT q.principal, q.period, q.starts, q.used
FROM quota_usage q JOIN unnest($5::text[], $6::text[], $7::date[]) AS r (principal, period, starts)
    ON q.principal = r.principal AND q.period = r.period AND q.starts = r.starts
"""


@dataclass(frozen=True, slots=True)
class QuotaExhausted:
    """Why a call was refused: the principal's quota of `limit` calls per `period` is used up
    until `resets_at`, `retry_after` seconds from the refusal."""

    principal: str
    period: Period
    limit: int
    resets_at: datetime
    retry_after: float


class QuotaStore:
    """The `quota_usage` rows of one service's schema (the pool's search path)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, deltas: Mapping[Key, int], read: Iterable[Key] = ()) -> dict[Key, int]:
        """Adds `deltas` and returns the total of every key added or read (0 for a key with no row)."""
        # A fixed row order, so two replicas adding to the same rows cannot deadlock.
        added = sorted(deltas.items())
        wanted = sorted(set(read) - set(deltas))
        totals: dict[Key, int] = dict.fromkeys([*deltas, *wanted], 0)
        if not totals:
            return totals
        rows = await self._pool.fetch(
            _ADD,
            [k[0] for k, _ in added],
            [k[1] for k, _ in added],
            [k[2] for k, _ in added],
            [n for _, n in added],
            [k[0] for k in wanted],
            [k[1] for k in wanted],
            [k[2] for k in wanted],
        )
        for row in rows:
            period: Period = "day" if row["period"] == "day" else "month"
            totals[(row["principal"], period, row["starts"])] = int(row["used"])
        return totals

    async def forget_before(self, day: date) -> None:
        await self._pool.execute("DELETE FROM quota_usage WHERE starts < $1", day)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    first = _month_start(day)
    return (first + timedelta(days=32)).replace(day=1)


class QuotaCounter:
    """The quotas of the principals that have one (principal -> Quota); others pass untouched."""

    def __init__(
        self,
        quotas: Mapping[str, Quota],
        store: QuotaStore,
        *,
        flush_seconds: float = 1.0,
        flush_calls: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._quotas = dict(quotas)
        self._store = store
        self._flush_seconds = flush_seconds
        self._flush_calls = flush_calls
        self._clock = clock
        self._windows: dict[str, tuple[tuple[Key, int], ...]] = {}
        self._resets: dict[Period, datetime] = {}
        self._rolls_at = 0.0
        self._known: dict[Key, int] = {}
        self._pending: dict[Key, int] = {}
        self._waiting = 0  # calls counted since the last flush
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._forget = True
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._roll(self._clock())

    def _roll(self, now: float) -> None:
        """Moves every principal to the day and month `now` falls in (UTC)."""
        today = datetime.fromtimestamp(now, UTC).date()
        tomorrow, next_month = today + timedelta(days=1), _next_month(today)
        self._resets = {
            "day": datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC),
            "month": datetime(next_month.year, next_month.month, 1, tzinfo=UTC),
        }
        self._rolls_at = self._resets["day"].timestamp()
        windows: dict[str, tuple[tuple[Key, int], ...]] = {}
        for principal, quota in self._quotas.items():
            current: list[tuple[Key, int]] = []
            if quota.per_day is not None:
                current.append(((principal, "day", today), quota.per_day))
            if quota.per_month is not None:
                current.append(((principal, "month", _month_start(today)), quota.per_month))
            windows[principal] = tuple(current)
            for (_, period, _), limit in current:
                QUOTA_LIMIT.labels(principal, period).set(limit)
        self._windows = windows
        live = self._current_keys()
        self._known = {k: v for k, v in self._known.items() if k in live}
        self._forget = True

    def _current_keys(self) -> set[Key]:
        return {key for windows in self._windows.values() for key, _ in windows}

    def acquire(self, principal: str) -> QuotaExhausted | None:
        """None when the call may go ahead (and it is counted), else why not. Never waits."""
        windows = self._windows.get(principal)
        if windows is None:
            return None
        now = self._clock()
        if now >= self._rolls_at:
            self._roll(now)
            windows = self._windows[principal]
        refused: QuotaExhausted | None = None
        for key, limit in windows:
            if self._known.get(key, 0) + self._pending.get(key, 0) >= limit:
                resets_at = self._resets[key[1]]
                # Both used up: the later reset is when a call would be served again.
                if refused is None or resets_at > refused.resets_at:
                    refused = QuotaExhausted(principal, key[1], limit, resets_at, resets_at.timestamp() - now)
        if refused is not None:
            QUOTA_REFUSED.labels(principal, refused.period).inc()
            return refused
        for key, _ in windows:
            self._pending[key] = self._pending.get(key, 0) + 1
        self._waiting += 1
        if self._waiting >= self._flush_calls:
            self._wake.set()
        return None

    def used(self, principal: str) -> dict[Period, int]:
        """period -> calls counted in the current window, as far as this replica knows."""
        return {
            key[1]: self._known.get(key, 0) + self._pending.get(key, 0) for key, _ in self._windows.get(principal, ())
        }

    async def flush(self) -> None:
        """Adds this replica's calls to the database and reads every current total back."""
        async with self._lock:
            if self._clock() >= self._rolls_at:
                self._roll(self._clock())
            # The calls being added stay in `_pending` until the database has them, so calls
            # admitted meanwhile still see them; on failure nothing needs putting back.
            deltas, waiting = dict(self._pending), self._waiting
            totals = await self._store.add(deltas, self._current_keys())
            for key, n in deltas.items():
                left = self._pending[key] - n
                if left:
                    self._pending[key] = left
                else:
                    del self._pending[key]
            self._waiting -= waiting
            # A key with no row reads 0: an operator who deleted a row gave the allowance back.
            self._known = {key: totals.get(key, 0) for key in self._current_keys()}
            for (principal, period, _), used in self._known.items():
                QUOTA_USED.labels(principal, period).set(used)
            if self._forget:
                # Last month's rows stay for a look back; older ones go.
                today = datetime.fromtimestamp(self._clock(), UTC).date()
                await self._store.forget_before(_month_start(_month_start(today) - timedelta(days=1)))
                self._forget = False

    async def start(self) -> None:
        """Reads the current totals (a database that cannot be read stops the start), then flushes
        in the background."""
        await self.flush()
        self._task = asyncio.create_task(self._run(), name="quota flush")

    async def stop(self, wait_seconds: float = 5.0) -> None:
        """Stops the background flush and adds what is still counted only here."""
        if self._task is not None:
            # Let a flush under way finish rather than cancel it: cancelled after the database
            # committed, its calls would be added again below.
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), wait_seconds)
            await cancel_all([self._task])
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("could not add the last quota counts to the database")

    async def _run(self) -> None:
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.flush()
            except Exception:
                if not failing:
                    log.warning("quota counts could not be flushed; enforcing with the last totals", exc_info=True)
                failing = True
                # Not again at once, even with calls waiting: the database is struggling.
                await asyncio.sleep(self._flush_seconds)
                continue
            if failing:
                log.info("quota counts flushed again")
            failing = False
