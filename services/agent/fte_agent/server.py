"""Wiring: the database, the downstream channels, the Kafka worker and consumers, and AgentService."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fte.agent.v1 import agent_service_pb2_grpc
from fte.identity.v1 import identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime.db import apply_migrations, create_pool
from fte_runtime.grpc_client import connect
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration, run_until_signalled
from fte_runtime.kafka import EventPublisher, make_consumer, make_producer, run_consumer
from fte_runtime.logs import configure_logging
from fte_runtime.tasks import cancel_all

from fte_agent import packs, reader
from fte_agent.compose import Voice
from fte_agent.engines.offline import OfflineEngine
from fte_agent.events import EventHandlers
from fte_agent.policy import Policy
from fte_agent.processor import MessageProcessor
from fte_agent.reasoner import Engine, Reasoner
from fte_agent.servicer import SCOPES, AgentServicer
from fte_agent.settings import AgentSettings
from fte_agent.tools import KnowledgeSearcher
from fte_agent.worker import KeyedWorker, TokenBucket

log = logging.getLogger("fte.agent")
SCHEMA = "agent"


def migrations_dir() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("fte_agent") / "migrations"


async def migrate(settings: AgentSettings) -> list[str]:
    return await apply_migrations(settings.database_url.get_secret_value(), SCHEMA, migrations_dir())


def build_reasoner(settings: AgentSettings) -> Reasoner:
    """The policy (language packs, the learned reader) and the engines, in the playbook's voice.
    An incomplete language pack or playbook stops the start here."""
    language_packs = packs.require(settings.supported_languages)
    playbook = packs.playbook(settings.playbook_file)
    reading = Policy(settings.supported_languages, language_packs, reader.trained(settings.reader_cache_dir))

    def voice(language: str) -> Voice:
        return Voice(language_packs.get(language) or language_packs[packs.DEFAULT_LANGUAGE], playbook)

    offline = OfflineEngine(settings.kb_min_similarity, voice)
    engine: Engine = offline
    if settings.engine == "llm":
        from fte_agent.engines.llm import LlmEngine

        engine = LlmEngine.from_settings(settings, playbook)
    return Reasoner(engine, offline, policy=reading, packs=language_packs, playbook=playbook)


@dataclass
class Agent:
    """Every long-lived part of a running agent, started and closed together."""

    settings: AgentSettings
    pool: asyncpg.Pool
    channels: list[grpc.aio.Channel]
    producer: AIOKafkaProducer
    processor: MessageProcessor
    servicer: AgentServicer
    handlers: EventHandlers
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    consumers: list[AIOKafkaConsumer] = field(default_factory=list)

    @classmethod
    async def create(cls, settings: AgentSettings) -> Agent:
        # First, before anything opens: training the reader takes seconds, and a bad language pack
        # or playbook stops the start with nothing to close.
        reasoner = await asyncio.to_thread(build_reasoner, settings)
        await migrate(settings)
        # No session state is kept (transaction-scoped locks only): no reset round trip per release.
        pool = await create_pool(settings, SCHEMA, application_name="fte-agent", reset_on_release=False)
        token = settings.service_token.get_secret_value() or None
        timeout = settings.default_deadline_seconds
        kch = connect(settings.knowledge_target, token=token, default_timeout=timeout)
        ich = connect(settings.identity_target, token=token, default_timeout=timeout)
        nch = connect(settings.notifier_target, token=token, default_timeout=timeout)
        producer = make_producer(settings, "fte-agent")
        await producer.start()
        publisher = EventPublisher(producer, "//agent.fte")
        notifier = notifier_service_pb2_grpc.NotifierServiceStub(nch)
        processor = MessageProcessor(
            pool,
            identity_service_pb2_grpc.IdentityServiceStub(ich),
            notifier,
            KnowledgeSearcher(knowledge_service_pb2_grpc.KnowledgeServiceStub(kch)),
            publisher=publisher,
            reasoner=reasoner,
            conversation_idle=timedelta(hours=settings.conversation_idle_hours),
            gap_below=settings.kb_min_similarity + settings.kb_gap_margin,
        )
        servicer = AgentServicer(pool, notifier, publisher, reasoner.playbook.follow_up_hours)
        return cls(settings, pool, [kch, ich, nch], producer, processor, servicer, EventHandlers(pool))

    def registration(self) -> ServiceRegistration:
        return ServiceRegistration(
            "fte.agent.v1.AgentService",
            self.servicer,
            agent_service_pb2_grpc.add_AgentServiceServicer_to_server,
            SCOPES,
        )

    def jobs(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.run_worker, self.run_outcomes, self.run_customer_changes]

    async def run_worker(self) -> None:
        s = self.settings
        consumer = make_consumer(s, s.consumer_group)
        self.consumers.append(consumer)
        worker = KeyedWorker(
            consumer,
            self.producer,
            lambda record: self.processor.handle_record(record.value, record.headers),
            self.stopping,
            max_in_flight=s.max_in_flight,
            pace=TokenBucket(s.rate_burst, s.rate_per_minute),
            max_attempts=s.max_attempts,
        )
        consumer.subscribe([s.incoming_topic], listener=worker)
        await consumer.start()
        try:
            await worker.run()
        finally:
            await consumer.stop()

    async def _follow(self, topic: str, group: str, handler: Callable[..., Awaitable[None]]) -> None:
        consumer = make_consumer(self.settings, group, topic)
        self.consumers.append(consumer)
        await consumer.start()
        try:
            await run_consumer(consumer, handler, self.producer, self.stopping)
        finally:
            await consumer.stop()

    async def run_outcomes(self) -> None:
        await self._follow(
            self.settings.outcomes_topic, f"{self.settings.consumer_group}-outcomes", self.handlers.delivery_outcome
        )

    async def run_customer_changes(self) -> None:
        await self._follow(
            self.settings.customers_topic, f"{self.settings.consumer_group}-customers", self.handlers.customer_changed
        )

    async def close(self) -> None:
        self.stopping.set()
        for consumer in self.consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        for ch in self.channels:
            await ch.close()
        await self.pool.close()


async def serve(settings: AgentSettings) -> None:
    configure_logging("agent", settings.log_level, settings.log_json)
    agent = await Agent.create(settings)
    server = GrpcServer(settings, "agent.fte", [agent.registration()])

    async def stop_jobs() -> None:
        agent.stopping.set()

    def job(fn: Callable[[], Awaitable[None]]) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            # A job ending early (e.g. the broker unreachable at start) is retried, not fatal.
            while not agent.stopping.is_set():
                try:
                    await fn()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background job failed; restarting it")
                    await asyncio.sleep(1)

        return run

    await run_until_signalled(server, cleanups=[stop_jobs, agent.close], background=[job(j) for j in agent.jobs()])


class RunningAgent:
    """An agent started in this process (tests, benchmarks): gRPC server plus background jobs."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.server = GrpcServer(agent.settings, "agent.fte", [agent.registration()])
        self.tasks: list[asyncio.Task[None]] = []
        self.port = 0

    @classmethod
    async def start(cls, settings: AgentSettings) -> RunningAgent:
        running = cls(await Agent.create(settings))
        running.port = await running.server.start()
        running.tasks = [asyncio.create_task(job()) for job in running.agent.jobs()]
        return running

    async def stop(self) -> None:
        self.agent.stopping.set()
        await self.server.stop()
        await asyncio.wait(self.tasks, timeout=10)
        await cancel_all(self.tasks)
        await self.agent.close()
