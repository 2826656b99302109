"""Test helpers: reading back what the gateway published, signing Twilio requests, and a small
in-test AgentService (the real agent is tested end to end elsewhere)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.events.v1 import delivery_events_pb2, message_events_pb2
from fte_gateway.server import GatewayServer
from fte_runtime import envelope, topics
from fte_runtime.envelope import Event
from twilio.request_validator import RequestValidator

MAILBOX = "support@example.com"
PUSH_AUDIENCE = "https://gateway.test/webhooks/gmail"
PUSH_ACCOUNT = "gmail-push@fte-test.iam.gserviceaccount.com"
TWILIO_TOKEN = "test-twilio-auth-token"

GatewayFactory = Callable[..., Awaitable[GatewayServer]]

WATCHED = (topics.TICKETS_INCOMING, topics.DELIVERY_STATUS)
TYPES = envelope.type_map(message_events_pb2.MessageReceived, delivery_events_pb2.DeliveryStatusChanged)


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    event: Event


class EventLog:
    """End offsets of the gateway's topics, and every record published after a snapshot."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.consumer.start()
        for topic in WATCHED:
            parts = self.consumer.partitions_for_topic(topic)
            if parts is None:
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(topic) or set()
            self.partitions.extend(TopicPartition(topic, p) for p in sorted(parts))
        self.consumer.assign(self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def snapshot(self) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(self.partitions)
        return ends

    async def since(self, snapshot: Mapping[TopicPartition, int]) -> list[Record]:
        """Every record after `snapshot` up to the current end (the gateway answered after acks)."""
        ends = await self.snapshot()
        out: list[Record] = []
        for tp in self.partitions:
            if ends[tp] <= snapshot[tp]:
                continue
            self.consumer.seek(tp, snapshot[tp])
            while await self.consumer.position(tp) < ends[tp]:
                batch = await self.consumer.getmany(tp, timeout_ms=1000)
                for rec in batch.get(tp, []):
                    if rec.offset < ends[tp]:
                        out.append(
                            Record(rec.topic, (rec.key or b"").decode(), envelope.decode(rec.value, rec.headers, TYPES))
                        )
        return out


def twilio_sign(token: str, url: str, params: Mapping[str, str]) -> str:
    signature: str = RequestValidator(token).compute_signature(url, dict(params))
    return signature


def push_body(email: str, history_id: int) -> dict[str, Any]:
    data = base64.urlsafe_b64encode(json.dumps({"emailAddress": email, "historyId": history_id}).encode()).decode()
    return {"message": {"data": data, "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"}, "subscription": "s"}


class FakeAgentService(agent_service_pb2_grpc.AgentServiceServicer):
    """Tickets and messages held in memory; only the reads the status page uses."""

    def __init__(self) -> None:
        self.tickets: dict[str, agent_pb2.Ticket] = {}
        self.messages: dict[str, list[agent_pb2.Message]] = {}

    def add(self, ticket: agent_pb2.Ticket, messages: Sequence[agent_pb2.Message] = ()) -> None:
        self.tickets[ticket.name] = ticket
        self.messages[ticket.name] = list(messages)

    async def GetTicket(
        self, request: agent_service_pb2.GetTicketRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.GetTicketResponse:
        ticket = self.tickets.get(request.name)
        if ticket is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such ticket")
        return agent_service_pb2.GetTicketResponse(ticket=ticket)

    async def ListMessages(
        self, request: agent_service_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_service_pb2.ListMessagesResponse:
        return agent_service_pb2.ListMessagesResponse(messages=self.messages.get(request.ticket, []))


async def wait_ready(url: str, timeout: float = 20.0) -> None:
    """Poll /readyz until the gateway is connected to Kafka."""
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(timeout):
        while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - polling a server
            await asyncio.sleep(0.05)
