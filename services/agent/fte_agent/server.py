"""The agent service: the database, the downstream channels, AgentService, and the Kafka worker
and consumers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fte.agent.v1 import agent_service_pb2_grpc
from fte_runtime import db, envelope, service
from fte_runtime.db import create_pool
from fte_runtime.kafka import EventPublisher, start_producer

from fte_agent import consumers
from fte_agent.downstream import Downstream
from fte_agent.events import EventHandlers
from fte_agent.processor import MessageProcessor
from fte_agent.reasoning import build_reasoner
from fte_agent.servicer import SCOPES, AgentServicer
from fte_agent.settings import AgentSettings
from fte_agent.tools import KnowledgeSearcher

__all__ = ["Agent", "RunningAgent", "build_reasoner", "migrate", "serve"]

SCHEMA = "agent"
DOMAIN = envelope.service_source("agent")
SERVICE_NAME = "fte.agent.v1.AgentService"


async def migrate(settings: AgentSettings) -> list[str]:
    return await db.migrate(settings, SCHEMA, "fte_agent")


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
        mesh = self.closing(Downstream.connect(s), Downstream.close)
        self.producer = await self.resource(start_producer(s, "fte-agent"), lambda p: p.stop())
        publisher = EventPublisher(self.producer, DOMAIN)
        self.processor = MessageProcessor(
            self.pool,
            mesh.identity,
            mesh.notifier,
            KnowledgeSearcher(mesh.knowledge),
            publisher=publisher,
            reasoner=reasoner,
            conversation_idle=timedelta(hours=s.conversation_idle_hours),
            gap_below=s.kb_min_similarity + s.kb_gap_margin,
        )
        self.handlers = EventHandlers(self.pool)
        servicer = AgentServicer(
            self.pool,
            mesh.notifier,
            publisher,
            reasoner.playbook.follow_up_hours,
            hours=reasoner.playbook.hours,
            drafter=self.processor.draft_reply,
        )
        self.register(SERVICE_NAME, servicer, agent_service_pb2_grpc.add_AgentServiceServicer_to_server, SCOPES)
        # Graceful: on stop each lets what it started finish (whatever does not is redelivered).
        producer, stopping = self.producer, self.stopping
        self.background("worker", lambda: consumers.run_incoming(s, producer, self.processor, stopping), graceful=True)
        self.background(
            "delivery outcomes", lambda: consumers.run_outcomes(s, producer, self.handlers, stopping), graceful=True
        )
        self.background(
            "customer changes",
            lambda: consumers.run_customer_changes(s, producer, self.handlers, stopping),
            graceful=True,
        )


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
