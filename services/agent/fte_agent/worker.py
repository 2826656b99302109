"""The consumer loop of fte.tickets.incoming: one customer's messages in order, many customers at
once, and a partition's offset committed only once every earlier record of it is stored.

Each fetched record joins the chain of its key (the customer's channel identity): records of a
key run one after another, keys run concurrently. Per partition the loop tracks which offsets
are done and commits up to the first one that is not. A customer sending faster than the
allowed pace is slowed down by a token bucket, never dropped.

Limits: `max_in_flight` records are handled at once; a record waiting for its customer's earlier
one, or for its pace, holds no such slot, so a customer flooding the inbox slows only
themselves. `max_buffered` records may be fetched and not yet done (memory), and one customer
with more than `max_per_key` of them pauses fetching from their partition until half of those
are done: the other partitions keep flowing, and the flood stays in the broker, not in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from fte_runtime.kafka import RetryPolicy, handle_with_retry

log = logging.getLogger("fte.agent.worker")

RecordHandler = Callable[[ConsumerRecord], Awaitable[object]]


class Stopping(Exception):
    """The worker is stopping; the record stays uncommitted and is handled after a restart."""


class TokenBucket:
    """Per-key pace: `burst` messages at once, then `per_minute` a minute."""

    def __init__(self, burst: int, per_minute: float) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self._state: dict[bytes, tuple[float, float]] = {}

    def delay(self, key: bytes) -> float:
        """Seconds to wait before this key's next message; takes its token."""
        now = time.monotonic()
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self._state[key] = (tokens - 1, now)
        if len(self._state) > 100_000:  # forget idle keys (their buckets are full again anyway)
            cutoff = now - self.burst / self.rate
            self._state = {k: v for k, v in self._state.items() if v[1] > cutoff}
        return wait


class _Offsets:
    """Offsets fetched from one partition, in order, and which of them are done."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.committed = -1

    def ready(self) -> int | None:
        """The offset to commit (one past the last contiguous done record), if it moved."""
        last = None
        while self.pending and self.pending[0] in self.done:
            last = self.pending.popleft()
            self.done.discard(last)
        if last is None:
            return None
        self.committed = last + 1
        return self.committed


class KeyedWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        handler: RecordHandler,
        stopping: asyncio.Event,
        *,
        max_in_flight: int = 256,
        max_buffered: int = 4096,
        max_per_key: int = 64,
        pace: TokenBucket | None = None,
        max_attempts: int = 5,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.stopping = stopping
        self.max_buffered = max(max_buffered, max_in_flight)
        self.max_per_key = max_per_key
        self.pace = pace
        self.retry = RetryPolicy(max_attempts=max_attempts)
        self._offsets: dict[TopicPartition, _Offsets] = {}
        self._tails: dict[bytes, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = asyncio.Semaphore(max_in_flight)
        self._room = asyncio.Event()
        self._room.set()
        # Records fetched and not done, per key; and the keys over `max_per_key` per paused partition.
        self._backlog: dict[bytes, int] = {}
        self._flooding: dict[TopicPartition, set[bytes]] = {}

    # -- rebalance: finish what was started for revoked partitions, commit, forget them ----------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        await self._commit()
        for tp in revoked:
            self._offsets.pop(tp, None)
            # A paused partition comes back unpaused when it is assigned again.
            self._flooding.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None

    async def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if len(self._tasks) >= self.max_buffered:
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), timeout=0.5)
                    await self._commit()
                    continue
                room = self.max_buffered - len(self._tasks)
                batches = await self.consumer.getmany(timeout_ms=100, max_records=room)
                for tp, records in batches.items():
                    offsets = self._offsets.setdefault(tp, _Offsets())
                    for record in records:
                        offsets.pending.append(record.offset)
                        self._start(tp, record)
                await self._commit()
        finally:
            # Let started records finish briefly; whatever does not is redelivered after a restart.
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._commit()

    def _start(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        # A record without a key has no customer order to keep: it runs on its own.
        key = record.key if record.key is not None else f"\0{tp.partition}:{record.offset}".encode()
        previous = self._tails.get(key)
        task = asyncio.create_task(self._after(previous, key, tp, record))
        self._tails[key] = task
        self._tasks.add(task)
        backlog = self._backlog[key] = self._backlog.get(key, 0) + 1
        if backlog > self.max_per_key and key not in self._flooding.get(tp, ()):
            if not self._flooding.get(tp):
                self.consumer.pause(tp)
                log.warning("one customer has a backlog; pausing their partition", extra={"partition": tp.partition})
            self._flooding.setdefault(tp, set()).add(key)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._tails.get(key) is t:
                del self._tails[key]
            left = self._backlog[key] = self._backlog[key] - 1
            if left == 0:
                del self._backlog[key]
            flooding = self._flooding.get(tp)
            if flooding and key in flooding and left <= self.max_per_key // 2:
                flooding.discard(key)
                if not flooding:
                    del self._flooding[tp]
                    if tp in self.consumer.assignment():
                        self.consumer.resume(tp)
            if len(self._tasks) < self.max_buffered:
                self._room.set()

        task.add_done_callback(finished)

    async def _after(
        self, previous: asyncio.Task[None] | None, key: bytes, tp: TopicPartition, record: ConsumerRecord
    ) -> None:
        if previous is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        if self.pace is not None:
            wait = self.pace.delay(key)
            if wait > 0:
                log.info("customer is writing fast; slowing down", extra={"delay_seconds": round(wait, 1)})
                await self._sleep(wait)
        try:
            async with self._active:
                await self._handle(record)
        except Stopping:
            return
        offsets = self._offsets.get(tp)
        if offsets is not None:
            offsets.done.add(record.offset)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        if self.stopping.is_set():
            raise Stopping

    async def _handle(self, record: ConsumerRecord) -> None:
        if not await handle_with_retry(record, self.handler, self.producer, self.stopping, self.retry):
            raise Stopping

    async def _commit(self) -> None:
        ready: dict[TopicPartition, int] = {}
        for tp, offsets in self._offsets.items():
            offset = offsets.ready()
            if offset is not None:
                ready[tp] = offset
        if not ready:
            return
        try:
            await self.consumer.commit(ready)
        except Exception:
            # A rebalance can reject the commit; the records are redelivered and de-duplicated.
            log.warning("offset commit failed", exc_info=True)
