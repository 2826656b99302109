"""The agent service: the database, the downstream channels, AgentService, and the Kafka worker
and consumers."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import grpc
from fte.agent.v1 import agent_service_pb2_grpc
from fte.identity.v1 import identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime import db, envelope, service
from fte_runtime.db import create_pool
from fte_runtime.grpc_client import connect
from fte_runtime.kafka import EventPublisher, consume, make_consumer, start_producer

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
DOMAIN = envelope.service_source("agent")
SERVICE_NAME = "fte.agent.v1.AgentService"


async def migrate(settings: AgentSettings) -> list[str]:
    return await db.migrate(settings, SCHEMA, "fte_agent")


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


class Agent(service.Service[AgentSettings]):
    """Every long-lived part of a running agent: the pool, the downstream channels, the producer,
    AgentService, and the Kafka worker and consumers as supervised background jobs."""

    name = "agent"
    domain = DOMAIN

    async def open(self) -> None:
        s = self.settings
        # First, before anything opens: training the reader takes seconds, and a bad language pack
        # or playbook stops the start with nothing to close.
        reasoner = await asyncio.to_thread(build_reasoner, s)
        await migrate(s)
        # No session state is kept (transaction-scoped locks only): no reset round trip per release.
        self.pool = await self.resource(
            create_pool(s, SCHEMA, application_name="fte-agent", reset_on_release=False), lambda p: p.close()
        )
        self.keep_quotas(self.pool)
        token = s.service_token.get_secret_value() or None

        def channel(target: str) -> grpc.aio.Channel:
            return self.closing(connect(target, token=token, default_timeout=s.default_deadline_seconds), _close)

        kch, ich, nch = channel(s.knowledge_target), channel(s.identity_target), channel(s.notifier_target)
        self.producer = await self.resource(start_producer(s, "fte-agent"), lambda p: p.stop())
        publisher = EventPublisher(self.producer, DOMAIN)
        notifier = notifier_service_pb2_grpc.NotifierServiceStub(nch)
        self.processor = MessageProcessor(
            self.pool,
            identity_service_pb2_grpc.IdentityServiceStub(ich),
            notifier,
            KnowledgeSearcher(knowledge_service_pb2_grpc.KnowledgeServiceStub(kch)),
            publisher=publisher,
            reasoner=reasoner,
            conversation_idle=timedelta(hours=s.conversation_idle_hours),
            gap_below=s.kb_min_similarity + s.kb_gap_margin,
        )
        self.handlers = EventHandlers(self.pool)
        servicer = AgentServicer(
            self.pool,
            notifier,
            publisher,
            reasoner.playbook.follow_up_hours,
            hours=reasoner.playbook.hours,
            drafter=self.processor.draft_reply,
        )
        self.register(SERVICE_NAME, servicer, agent_service_pb2_grpc.add_AgentServiceServicer_to_server, SCOPES)
        # Graceful: on stop each lets what it started finish (whatever does not is redelivered).
        self.background("worker", self.run_worker, graceful=True)
        self.background("delivery outcomes", self.run_outcomes, graceful=True)
        self.background("customer changes", self.run_customer_changes, graceful=True)

    async def run_worker(self) -> None:
        s = self.settings
        consumer = make_consumer(s, s.consumer_group)
        worker = KeyedWorker(
            consumer,
            self.producer,
            lambda record: self.processor.handle_record(record.value, record.headers),
            self.stopping,
            max_in_flight=s.max_in_flight,
            max_buffered=s.max_buffered,
            max_per_key=s.max_per_customer,
            pace=TokenBucket(s.rate_burst, s.rate_per_minute),
            max_attempts=s.max_attempts,
        )
        consumer.subscribe([s.incoming_topic], listener=worker)
        try:
            await consumer.start()
            await worker.run()
        finally:
            await consumer.stop()

    async def run_outcomes(self) -> None:
        s = self.settings
        consumer = make_consumer(s, f"{s.consumer_group}-outcomes", s.outcomes_topic)
        await consume(consumer, self.handlers.delivery_outcome, self.producer, self.stopping)

    async def run_customer_changes(self) -> None:
        s = self.settings
        consumer = make_consumer(s, f"{s.consumer_group}-customers", s.customers_topic)
        await consume(consumer, self.handlers.customer_changed, self.producer, self.stopping)


async def _close(channel: grpc.aio.Channel) -> None:
    await channel.close()


async def serve(settings: AgentSettings) -> None:
    await Agent(settings).serve()


class RunningAgent:
    """An agent started in this process (tests, benchmarks)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.port = 0

    @classmethod
    async def start(cls, settings: AgentSettings) -> RunningAgent:
        running = cls(Agent(settings))
        running.port = await running.agent.start()
        return running

    async def stop(self) -> None:
        await self.agent.stop()
