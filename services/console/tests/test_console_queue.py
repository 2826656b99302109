"""The queue's filters and order (pure logic; the stack tests show them on the page)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2
from fte_console.queue import BadFilter, Filters, order, row

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def ticket(name: str, due_minutes: int | None) -> agent_pb2.Ticket:
    t = agent_pb2.Ticket(name=f"tickets/{name}", status=agent_pb2.TICKET_STATUS_ESCALATED)
    t.create_time.FromDatetime(NOW - timedelta(hours=1))
    if due_minutes is not None:
        t.reply_due_time.FromDatetime(NOW + timedelta(minutes=due_minutes))
    return t


def test_the_soonest_due_comes_first_and_a_ticket_without_a_due_time_last() -> None:
    tickets = [ticket("later", 300), ticket("none", None), ticket("overdue", -20), ticket("soon", 30)]
    assert [t.name for t in order(tickets)] == ["tickets/overdue", "tickets/soon", "tickets/later", "tickets/none"]
    overdue, soon = row(tickets[2], NOW), row(tickets[3], NOW)
    assert (overdue.due, overdue.due_in, overdue.overdue) == ("2026-12-07 11:40 UTC", "overdue 20 min", True)
    assert (soon.due_in, soon.overdue) == ("in 30 min", False)
    assert row(tickets[1], NOW).due == ""


def test_filters_become_one_list_call_per_status_shown() -> None:
    filters = Filters.parse({"reason": "refund", "channel": "whatsapp", "assignee": "me"})
    calls = filters.requests("lin", 50)
    assert [c.status for c in calls] == [
        agent_pb2.TICKET_STATUS_ESCALATED,
        agent_pb2.TICKET_STATUS_OPEN,
        agent_pb2.TICKET_STATUS_IN_PROGRESS,
    ]
    assert {(c.escalation_reason, c.channel, c.assignee, c.unassigned) for c in calls} == {
        (common_pb2.ESCALATION_REASON_REFUND, common_pb2.CHANNEL_WHATSAPP, "lin", False)
    }
    nobody = Filters.parse({"status": "open", "assignee": "nobody"}).requests("lin", 50)
    assert [(c.status, c.assignee, c.unassigned) for c in nobody] == [(agent_pb2.TICKET_STATUS_OPEN, "", True)]
    assert Filters.parse({"mine": "1"}).mine
    assert Filters.parse({"assignee": "sam"}).requests("lin", 5)[0].assignee == "sam"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"status": "resolved"}, "status 'resolved' is not one of: escalated, open, in_progress"),
        ({"reason": "bored"}, "reason 'bored' is not one of"),
        ({"channel": "fax"}, "channel 'fax' is not one of: email, whatsapp, web_form"),
        ({"assignee": "<b>x</b>"}, "is not a username"),
    ],
)
def test_an_unknown_filter_is_refused_with_the_reason(query: dict[str, str], error: str) -> None:
    with pytest.raises(BadFilter, match=error.replace("(", r"\(")):
        Filters.parse(query)
