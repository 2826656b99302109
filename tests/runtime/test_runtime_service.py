"""The one service lifecycle (fte_runtime.service), back-off, and the consumer retry policy."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from aiokafka import ConsumerRecord
from fte_runtime.backoff import Backoff, delay_for
from fte_runtime.errors import InvalidArgument
from fte_runtime.idempotency import check_request_id, derived_id
from fte_runtime.kafka import PoisonRecord, RetryPolicy, handle_with_retry
from fte_runtime.metrics import KAFKA_CONSUMED
from fte_runtime.service import Service
from fte_runtime.settings import GrpcServerSettings
from grpc_health.v1 import health_pb2, health_pb2_grpc


class Probe(Service[GrpcServerSettings]):
    """Opens two resources; may fail after them; runs the jobs it is given."""

    name = "probe"
    domain = "probe.fte"

    def __init__(self, *, fail_open: bool = False, jobs: dict[str, Any] | None = None) -> None:
        super().__init__(GrpcServerSettings(grpc_port=0, shutdown_grace_seconds=0.5))
        self.fail_open = fail_open
        self.given = jobs or {}
        self.events: list[str] = []

    async def _open(self, what: str) -> str:
        self.events.append(f"open {what}")
        return what

    async def _close(self, what: str) -> None:
        self.events.append(f"close {what}")

    async def open(self) -> None:
        await self.resource(self._open("pool"), self._close)
        await self.resource(self._open("producer"), self._close)
        if self.fail_open:
            raise ConnectionError("the broker is down")
        for name, job in self.given.items():
            self.background(name, job, graceful=name.startswith("graceful"))


async def test_a_failed_start_closes_what_was_opened_last_first() -> None:
    probe = Probe(fail_open=True)
    with pytest.raises(ConnectionError):
        await probe.start()
    assert probe.events == ["open pool", "open producer", "close producer", "close pool"]


async def test_stop_drains_lets_graceful_jobs_finish_and_closes_in_reverse_order() -> None:
    finished: list[str] = []

    async def graceful() -> None:
        await probe.stopping.wait()
        await asyncio.sleep(0.05)
        finished.append("graceful")

    async def forever() -> None:
        await asyncio.Event().wait()

    probe = Probe(jobs={"graceful worker": graceful, "poller": forever})
    port = await probe.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await probe.stop()
    assert finished == ["graceful"]
    assert probe.events[-2:] == ["close producer", "close pool"]


async def test_a_failing_job_is_restarted_with_back_off() -> None:
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("the dependency is down")
        third.set()
        await asyncio.Event().wait()

    probe = Probe(jobs={"flaky": flaky})
    await probe.start()
    try:
        async with asyncio.timeout(10):
            await third.wait()
    finally:
        await probe.stop()
    assert runs == 3


async def test_backoff_doubles_up_to_its_cap_and_stops_waiting_when_told() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next_delay() == 0.1
    assert [delay_for(n, base=1.0, cap=5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    stopping = asyncio.Event()
    stopping.set()
    assert await Backoff(60.0, 60.0).wait(stopping) is False


class FlakyDeadLetters:
    """Stands in for the producer: the first dead-letter sends fail, then they are kept."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def send_and_wait(self, topic: str, *, value: bytes | None, key: bytes | None, headers: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((topic, value, dict(headers)))


def record(offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord(
        topic="fte.test", partition=0, offset=offset, timestamp=0, timestamp_type=0, key=b"k", value=b"v",
        checksum=None, serialized_key_size=1, serialized_value_size=1, headers=(),
    )  # fmt: skip


POLICY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


async def test_a_failed_dead_letter_send_is_retried_not_raised() -> None:
    async def poison(_: ConsumerRecord) -> None:
        raise PoisonRecord("cannot be parsed")

    producer = FlakyDeadLetters(failures=2)
    assert await handle_with_retry(record(), poison, producer, asyncio.Event(), POLICY) is True
    [(topic, value, headers)] = producer.sent
    assert (topic, value) == ("fte.test.dlq", b"v")
    assert headers["dlq_error"] == b"PoisonRecord: cannot be parsed"


async def test_a_failure_is_dead_lettered_after_max_attempts_and_a_transient_one_is_not() -> None:
    calls = 0

    async def broken(_: ConsumerRecord) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    producer = FlakyDeadLetters(failures=0)
    assert await handle_with_retry(record(), broken, producer, asyncio.Event(), POLICY) is True
    assert calls == 3
    assert producer.sent[0][2]["dlq_error"].startswith(b"failed 3 times: ValueError")

    stopping = asyncio.Event()
    transient_calls = 0

    async def unavailable(_: ConsumerRecord) -> None:
        nonlocal transient_calls
        transient_calls += 1
        if transient_calls == 10:
            stopping.set()
        raise ConnectionRefusedError("down")

    producer = FlakyDeadLetters(failures=0)
    assert await handle_with_retry(record(), unavailable, producer, stopping, POLICY) is False
    assert transient_calls == 10
    assert producer.sent == []


async def test_without_a_producer_a_failing_record_is_skipped_not_dead_lettered() -> None:
    """A watcher (one consumer group per process) passes no producer: each process would copy
    the same record to the DLQ."""
    seen: list[int] = []

    async def poison(r: ConsumerRecord) -> None:
        seen.append(r.offset)
        raise PoisonRecord("cannot be parsed")

    skipped = KAFKA_CONSUMED.labels("fte.test", "skipped")
    before = skipped._value.get()
    assert await handle_with_retry(record(3), poison, None, asyncio.Event(), POLICY) is True
    assert seen == [3]  # handled once, then skipped
    assert skipped._value.get() == before + 1


def test_the_request_id_rule() -> None:
    assert check_request_id("") == ""
    assert check_request_id("r-1") == "r-1"
    assert check_request_id("x" * 200) == "x" * 200
    for value, kwargs, reason in [
        ("   ", {"required": True}, "REQUEST_ID_REQUIRED"),
        ("x" * 201, {}, "REQUEST_ID_TOO_LONG"),
        ("x" * 151, {"max_length": 150}, "REQUEST_ID_TOO_LONG"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            check_request_id(value, **kwargs)  # type: ignore[arg-type]
        assert err.value.reason == reason
    assert derived_id("escalation", "T-1", "k") == derived_id("escalation", "T-1", "k")
    assert derived_id("escalation", "T-1", "k") != derived_id("escalation", "T-2", "k")
