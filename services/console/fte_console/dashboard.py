"""The dashboard, for all staff: the last 24 hours and the last 30 days per channel (volume,
resolution and escalation rates, escalations by reason, first-response times of the agent and of
staff), sentiment per day, and the knowledge gaps (the questions the agent could not answer well,
grouped). Figures from AgentService.GetTicketMetrics, gaps from KnowledgeService.ListKnowledgeGaps,
read at once. Server-rendered: the charts are SVG drawn here, so the page needs no script.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, timedelta

import grpc
from fte.agent.v1 import agent_service_pb2
from fte.common.v1 import common_pb2
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2
from fte_runtime.enums import value_names
from google.protobuf.duration_pb2 import Duration
from starlette.requests import Request
from starlette.responses import Response

from fte_console.accounts import Session
from fte_console.pages import call, deps, render

CHANNELS = value_names(common_pb2.Channel)
REASONS = value_names(common_pb2.EscalationReason)
WINDOWS = (("last 24 hours", timedelta(hours=24)), ("last 30 days", timedelta(days=30)))
GAP_GROUPS = 10
# The SVG charts' size in their own units (the stylesheet scales them to the page).
CHART_WIDTH = 600
CHART_HEIGHT = 120


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a window's table: a channel, or all channels."""

    channel: str
    tickets: int
    customer_messages: int
    resolved_by_agent: str
    resolved_by_staff: str
    escalated: str
    reasons: list[tuple[str, int]]
    agent_first_response: str
    staff_first_response: str


@dataclass(frozen=True, slots=True)
class Bar:
    """A bar of a chart, in chart units, with what it shows as text (its tooltip and label)."""

    x: float
    y: float
    width: float
    height: float
    label: str
    negative: bool = False


@dataclass(frozen=True, slots=True)
class Window:
    title: str
    start: str
    end: str
    rows: list[Row]
    reason_bars: list[Bar]
    volume_bars: list[Bar]
    sentiment_bars: list[Bar]


def _share(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.0%})" if whole else "0"


def _duration(d: Duration, present: bool) -> str:
    if not present:
        return "-"
    seconds = d.ToTimedelta().total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _waits(m: agent_service_pb2.ChannelMetrics, who: str) -> str:
    median, p90 = f"{who}_first_response_median", f"{who}_first_response_p90"
    if not m.HasField(median):  # type: ignore[arg-type]
        return "-"
    return f"{_duration(getattr(m, median), True)} (p90 {_duration(getattr(m, p90), m.HasField(p90))})"  # type: ignore[arg-type]


def row(m: agent_service_pb2.ChannelMetrics) -> Row:
    return Row(
        channel=CHANNELS.get(m.channel, "") or "all channels",
        tickets=m.tickets,
        customer_messages=m.customer_messages,
        resolved_by_agent=_share(m.resolved_by_agent, m.tickets),
        resolved_by_staff=_share(m.resolved_by_staff, m.tickets),
        escalated=_share(m.escalated, m.tickets),
        reasons=[(REASONS.get(r.reason, str(r.reason)), r.tickets) for r in m.escalations],
        agent_first_response=_waits(m, "agent"),
        staff_first_response=_waits(m, "staff"),
    )


def count_bars(counts: list[tuple[str, int]]) -> list[Bar]:
    """Horizontal-axis bars of counts, tallest scaled to the chart's height."""
    if not counts:
        return []
    top = max(c for _, c in counts) or 1
    step = CHART_WIDTH / len(counts)
    bars = []
    for i, (label, count) in enumerate(counts):
        height = count / top * (CHART_HEIGHT - 10)
        bars.append(Bar(round(i * step + step * 0.1, 1), round(CHART_HEIGHT - height, 1),
                        round(step * 0.8, 1), round(height, 1), f"{label}: {count}"))  # fmt: skip
    return bars


def sentiment_bars(days: list[agent_service_pb2.DailySentiment]) -> list[Bar]:
    """Each day's mean sentiment as a bar up (positive) or down (negative) from the middle line."""
    if not days:
        return []
    step = CHART_WIDTH / len(days)
    middle, half = CHART_HEIGHT / 2, CHART_HEIGHT / 2 - 5
    bars = []
    for i, d in enumerate(days):
        height = max(abs(d.mean) * half, 1.0)
        y = middle - height if d.mean >= 0 else middle
        label = f"{d.day}: mean {d.mean:+.2f} over {d.tickets} tickets, {d.negative} negative"
        bars.append(Bar(round(i * step + step * 0.1, 1), round(y, 1), round(step * 0.8, 1), round(height, 1),
                        label, negative=d.mean < 0))  # fmt: skip
    return bars


def window(title: str, reply: agent_service_pb2.GetTicketMetricsResponse) -> Window:
    total = reply.channels[0] if reply.channels else agent_service_pb2.ChannelMetrics()
    per_channel = [m for m in reply.channels if m.channel]
    return Window(
        title=title,
        start=reply.start_time.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        end=reply.end_time.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        rows=[row(m) for m in [total, *per_channel]],
        reason_bars=count_bars([(REASONS.get(r.reason, str(r.reason)), r.tickets) for r in total.escalations]),
        volume_bars=count_bars([(d.day, d.tickets) for d in total.sentiment]),
        sentiment_bars=sentiment_bars(list(total.sentiment)),
    )


async def _gaps(request: Request) -> tuple[list[knowledge_pb2.KnowledgeGapGroup], str]:
    """The newest gap groups, or why there are none (the page works without them)."""
    ask = knowledge_service_pb2.ListKnowledgeGapsRequest(page_size=GAP_GROUPS, max_gaps_per_group=3)
    try:
        found = await deps(request).knowledge.ListKnowledgeGaps(ask)
    except grpc.aio.AioRpcError as exc:
        return [], f"the knowledge service did not answer ({exc.code().name}); reload to try again"
    return list(found.knowledge_gap_groups), ""


async def _metrics(request: Request, span: timedelta) -> agent_service_pb2.GetTicketMetricsResponse:
    ask = agent_service_pb2.GetTicketMetricsRequest()
    ask.window.FromTimedelta(span)
    return await deps(request).agent.GetTicketMetrics(ask)


async def page(request: Request, session: Session) -> Response:
    *replies, (groups, gaps_error) = await asyncio.gather(
        *(call(_metrics(request, span), "metrics") for _, span in WINDOWS), _gaps(request)
    )
    return render(
        request,
        "dashboard.html",
        session=session,
        windows=[window(title, reply) for (title, _), reply in zip(WINDOWS, replies, strict=True)],
        groups=groups,
        gaps_error=gaps_error,
        reasons=REASONS,
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
    )
