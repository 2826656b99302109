"""AgentService.GetTicketMetrics over gRPC on tickets the agent handled: volume, resolutions by the
agent and by staff, escalations by reason, first-response times, sentiment per UTC day, per
channel and in total, and the window's bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from agent_helpers import message  # type: ignore[import-not-found]
from fte.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte_runtime.grpc_client import connect
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

pytestmark = pytest.mark.kafka
C = common_pb2


def window(**kwargs: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(**kwargs))
    return d


def by_channel(reply: agent_service_pb2.GetTicketMetricsResponse) -> dict[int, Any]:
    return {m.channel: m for m in reply.channels}


async def test_ticket_metrics_per_channel_and_window(start_agent: Any, tokens: dict[str, str]) -> None:
    agent = await start_agent()
    processor = agent.agent.processor
    answered = [message("email", "How do I reset my password?"), message("whatsapp", "how do i connect slack?")]
    escalated = [
        message("web_form", "I want a refund for last month, this is unacceptable", subject="Refund"),
        message("email", "Our lawyer will contact you about this contract breach"),
    ]
    for msg, _ in answered + escalated:
        assert await processor.handle(msg) == "replied"
    ticket_ids = [r["id"] for r in await agent.agent.pool.fetch("SELECT id FROM tickets ORDER BY create_time")]
    assert len(ticket_ids) == 4
    async with connect(f"127.0.0.1:{agent.port}", token=tokens["staff"], default_timeout=10) as channel:
        staff = agent_service_pb2_grpc.AgentServiceStub(channel)
        refund = (
            await staff.ListTickets(agent_service_pb2.ListTicketsRequest(escalation_reason=C.ESCALATION_REASON_REFUND))
        ).tickets[0]
        await staff.ReplyToTicket(
            agent_service_pb2.ReplyToTicketRequest(ticket=refund.name, text="Refunded.", request_id="m-1")
        )
        await staff.ResolveTicket(agent_service_pb2.ResolveTicketRequest(ticket=refund.name))
        # One ticket from three days ago: inside 30 days, outside 24 hours.
        old = ticket_ids[0]
        await agent.agent.pool.execute(
            "UPDATE tickets SET create_time = create_time - interval '3 days' WHERE id = $1", old
        )
        await agent.agent.pool.execute(
            "UPDATE messages SET create_time = create_time - interval '3 days' WHERE ticket_id = $1", old
        )

        day = await staff.GetTicketMetrics(agent_service_pb2.GetTicketMetricsRequest(window=window(hours=24)))
        month = await staff.GetTicketMetrics(agent_service_pb2.GetTicketMetricsRequest(window=window(days=30)))

        assert (day.end_time.ToDatetime(UTC) - day.start_time.ToDatetime(UTC)) == timedelta(hours=24)
        total = by_channel(month)[C.CHANNEL_UNSPECIFIED]
        assert month.channels[0].channel == C.CHANNEL_UNSPECIFIED  # all channels first
        assert (total.tickets, total.customer_messages) == (4, 4)
        assert total.resolved_by_agent == 2  # the two answered questions
        assert total.resolved_by_staff == 1  # the refund, replied to and resolved by staff
        assert total.escalated == 2
        assert {(r.reason, r.tickets) for r in total.escalations} == {
            (C.ESCALATION_REASON_REFUND, 1),
            (C.ESCALATION_REASON_LEGAL, 1),
        }
        # Every ticket got the agent's reply; only the refund got a staff reply.
        assert total.agent_first_response_median.ToTimedelta() >= timedelta(0)
        assert total.agent_first_response_p90.ToTimedelta() >= total.agent_first_response_median.ToTimedelta()
        assert total.HasField("staff_first_response_median")
        assert sum(d.tickets for d in total.sentiment) == 4
        assert len(total.sentiment) == 2  # today and three days ago
        assert [d.day for d in total.sentiment] == sorted(d.day for d in total.sentiment)
        assert all(-1 <= d.mean <= 1 for d in total.sentiment)
        assert sum(d.negative for d in total.sentiment) >= 1  # the angry refund demand

        channels = by_channel(month)
        assert set(channels) == {C.CHANNEL_UNSPECIFIED, C.CHANNEL_EMAIL, C.CHANNEL_WHATSAPP, C.CHANNEL_WEB_FORM}
        assert channels[C.CHANNEL_EMAIL].tickets == 2
        web = channels[C.CHANNEL_WEB_FORM]
        assert (web.tickets, web.escalated, web.resolved_by_staff) == (1, 1, 1)
        assert [(r.reason, r.tickets) for r in web.escalations] == [(C.ESCALATION_REASON_REFUND, 1)]
        assert not channels[C.CHANNEL_WHATSAPP].HasField("staff_first_response_median")
        assert sum(m.tickets for m in month.channels if m.channel) == total.tickets

        # The last 24 hours leave out the old ticket.
        assert by_channel(day)[C.CHANNEL_UNSPECIFIED].tickets == 3

        # A window that ends before any ticket: all channels, all zero.
        end = Timestamp()
        end.FromDatetime(datetime.now(UTC) - timedelta(days=10))
        empty = await staff.GetTicketMetrics(
            agent_service_pb2.GetTicketMetricsRequest(window=window(hours=1), end_time=end)
        )
        assert [(m.channel, m.tickets, len(m.sentiment)) for m in empty.channels] == [(C.CHANNEL_UNSPECIFIED, 0, 0)]
        assert not empty.channels[0].HasField("agent_first_response_median")

        for bad in (window(minutes=5), window(days=91)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await staff.GetTicketMetrics(agent_service_pb2.GetTicketMetricsRequest(window=bad))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        future = Timestamp()
        future.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await staff.GetTicketMetrics(
                agent_service_pb2.GetTicketMetricsRequest(window=window(hours=24), end_time=future)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # tickets.read is enough; a knowledge-only caller is refused.
    async with connect(f"127.0.0.1:{agent.port}", token=tokens["kb-reader"], default_timeout=10) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent_service_pb2_grpc.AgentServiceStub(channel).GetTicketMetrics(
                agent_service_pb2.GetTicketMetricsRequest(window=window(hours=24))
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
