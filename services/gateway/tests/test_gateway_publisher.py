"""The publisher's deadline: a broker that stops answering fails the publish (the request gets a
503), while a cancel from outside stays a cancel."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from fte.events.v1 import message_events_pb2
from fte_gateway.events import Outgoing
from fte_gateway.publisher import KafkaUnavailable, Publisher
from fte_gateway.settings import GatewaySettings
from fte_runtime import topics
from fte_runtime.kafka import ensure_topics
from fte_stack.broker import TansuBroker
from fte_stack.procs import free_port


def _event(n: int) -> Outgoing:
    message = message_events_pb2.MessageReceived(channel_message_id=f"SMdeadline{n}", text_body="hello")
    return Outgoing(topics.TICKETS_INCOMING, "whatsapp:+14155550100", f"whatsapp:SMdeadline{n}", message)


async def test_publish_deadline_against_a_frozen_broker(tmp_path: Path) -> None:
    # A broker of its own, so it can be frozen (SIGSTOP): connections stay open, nothing answers.
    broker = TansuBroker(free_port(), tmp_path / "tansu.log")
    await broker.start()
    publisher = None
    try:
        await ensure_topics(broker.bootstrap, [topics.TICKETS_INCOMING])
        settings = GatewaySettings(kafka_bootstrap=broker.bootstrap, gmail_enabled=False, publish_timeout_seconds=0.5)
        publisher = Publisher(settings)
        await publisher.start()
        await publisher.connected()
        await publisher.publish([_event(1)], "corr-deadline")  # acknowledged
        assert broker.child.proc is not None
        os.kill(broker.child.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(KafkaUnavailable, match=r"^TimeoutError$"):
                await publisher.publish([_event(2)], "corr-deadline")
            assert not await publisher.ready()
            # Cancelled from outside before the deadline: a cancel, not a broker failure.
            pending = asyncio.create_task(publisher.publish([_event(3)], "corr-deadline"))
            await asyncio.sleep(0.1)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        finally:
            os.kill(broker.child.proc.pid, signal.SIGCONT)
    finally:
        if publisher is not None:
            await publisher.stop()
        await broker.stop()
