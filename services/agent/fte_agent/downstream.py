"""The services the agent calls, each over its own channel with the agent's token and deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from fte.identity.v1 import identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte.notifier.v1 import notifier_service_pb2_grpc
from fte_runtime.grpc_client import connect

from fte_agent.settings import AgentSettings


@dataclass(frozen=True)
class Downstream:
    channels: tuple[grpc.aio.Channel, ...]
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub
    notifier: notifier_service_pb2_grpc.NotifierServiceAsyncStub
    knowledge: knowledge_service_pb2_grpc.KnowledgeServiceAsyncStub

    @classmethod
    def connect(cls, settings: AgentSettings) -> Downstream:
        """Channels connect lazily: nothing is awaited, so a failed start has only these to close."""
        token = settings.service_token.get_secret_value() or None

        def channel(target: str) -> grpc.aio.Channel:
            return connect(target, token=token, default_timeout=settings.default_deadline_seconds)

        ich, nch, kch = (
            channel(settings.identity_target),
            channel(settings.notifier_target),
            channel(settings.knowledge_target),
        )
        return cls(
            (ich, nch, kch),
            identity_service_pb2_grpc.IdentityServiceStub(ich),
            notifier_service_pb2_grpc.NotifierServiceStub(nch),
            knowledge_service_pb2_grpc.KnowledgeServiceStub(kch),
        )

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))
