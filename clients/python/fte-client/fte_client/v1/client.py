"""`connect()`: one channel to the mesh (Envoy) with a token, and the typed stubs of the public APIs."""

from __future__ import annotations

from types import TracebackType

import grpc
from fte.agent.v1 import agent_service_pb2_grpc
from fte.identity.v1 import identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc

from fte_client.v1.channel import CallDefaults, TypedErrors, open_channel

DEFAULT_TARGET = "127.0.0.1:9000"
DEFAULT_TIMEOUT_SECONDS = 10.0


class Client:
    """The public APIs over one channel. Each attribute is the contract's typed async stub: call
    its methods with the generated request messages; pass `timeout=` (seconds) to a call to give
    it its own deadline. Failures raise `fte_client.v1.errors` exceptions."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.knowledge = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        self.identity = identity_service_pb2_grpc.IdentityServiceStub(channel)
        # The agent's AgentService: tickets, their messages and notes, customer history.
        self.tickets = agent_service_pb2_grpc.AgentServiceStub(channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def connect(
    target: str = DEFAULT_TARGET,
    *,
    token: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retries: bool = True,
) -> Client:
    """A client of the mesh at `target` (host:port of Envoy) calling as the token's principal.

    `timeout`: the deadline, in seconds, of a call that sets none. `retries`: retry idempotent
    calls (Get, List, Search) that fail with UNAVAILABLE."""
    interceptors = [TypedErrors(), CallDefaults(token, timeout)]
    return Client(open_channel(target, interceptors, retries=retries))
