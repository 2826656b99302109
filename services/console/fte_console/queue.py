"""The queue: its filters (read from the page's query string) and its rows, ordered by when a
reply is due. The due time is the agent's (`Ticket.reply_due_time`, from the playbook's support
hours and the escalation's promise): the console only shows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from fte.agent.v1 import agent_pb2, agent_service_pb2
from fte.common.v1 import common_pb2
from fte_runtime.enums import value_names

from fte_console.accounts import USERNAME

STATUSES = value_names(agent_pb2.TicketStatus)
REASONS = value_names(common_pb2.EscalationReason)
CHANNELS = value_names(common_pb2.Channel)
PRIORITIES = value_names(common_pb2.Priority)
# What needs a person: the statuses the queue shows, and may be filtered to.
QUEUE_STATUSES = (agent_pb2.TICKET_STATUS_ESCALATED, agent_pb2.TICKET_STATUS_OPEN, agent_pb2.TICKET_STATUS_IN_PROGRESS)
# The assignee filter's two words that are not usernames.
ME, NOBODY = "me", "nobody"


class BadFilter(ValueError):
    """A query-string filter the queue does not know; its message says which and why."""


def _number(names: Mapping[int, str], value: str, what: str, allowed: tuple[int, ...] | None = None) -> int:
    if not value:
        return 0
    for number, name in names.items():
        if name == value and (allowed is None or number in allowed):
            return number
    choices = [names[n] for n in (allowed or tuple(names))]
    raise BadFilter(f"{what} {value[:40]!r} is not one of: {', '.join(choices)}")


@dataclass(frozen=True)
class Filters:
    status: agent_pb2.TicketStatus.ValueType = agent_pb2.TICKET_STATUS_UNSPECIFIED
    reason: common_pb2.EscalationReason.ValueType = common_pb2.ESCALATION_REASON_UNSPECIFIED
    channel: common_pb2.Channel.ValueType = common_pb2.CHANNEL_UNSPECIFIED
    assignee: str = ""  # "", ME, NOBODY or a username

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        assignee = query.get("assignee", "")
        if query.get("mine") == "1":  # the navigation's "Assigned to me"
            assignee = ME
        if assignee and assignee not in (ME, NOBODY) and not USERNAME.match(assignee):
            raise BadFilter(f"assignee {assignee[:40]!r} is not a username, {ME!r} or {NOBODY!r}")
        return cls(
            status=agent_pb2.TicketStatus.ValueType(
                _number(STATUSES, query.get("status", ""), "status", QUEUE_STATUSES)
            ),
            reason=common_pb2.EscalationReason.ValueType(_number(REASONS, query.get("reason", ""), "reason")),
            channel=common_pb2.Channel.ValueType(_number(CHANNELS, query.get("channel", ""), "channel")),
            assignee=assignee,
        )

    def requests(self, username: str, page_size: int) -> list[agent_service_pb2.ListTicketsRequest]:
        """One ListTickets call per status shown."""
        assignee = username if self.assignee == ME else "" if self.assignee == NOBODY else self.assignee
        return [
            agent_service_pb2.ListTicketsRequest(
                status=status,
                escalation_reason=self.reason,
                channel=self.channel,
                assignee=assignee,
                unassigned=self.assignee == NOBODY,
                page_size=page_size,
            )
            for status in ((self.status,) if self.status else QUEUE_STATUSES)
        ]

    @property
    def mine(self) -> bool:
        return self.assignee == ME

    def selected(self) -> dict[str, str]:
        """The filters as the form shows them."""
        return {
            "status": STATUSES.get(self.status, ""),
            "reason": REASONS.get(self.reason, ""),
            "channel": CHANNELS.get(self.channel, ""),
            "assignee": self.assignee,
        }


@dataclass(frozen=True)
class QueueRow:
    ticket: str
    subject: str
    status: str
    reason: str
    channel: str
    priority: str
    assignee: str
    waiting: str
    sentiment: float
    due: str  # "2026-12-07 18:00 UTC", or "" without a due time
    due_in: str  # "in 3 h 10 min" or "overdue 20 min"
    overdue: bool


def _span(minutes: int) -> str:
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h {minutes % 60} min" if hours < 48 else f"{hours // 24} days"


def _ago(ts: datetime, now: datetime) -> str:
    return _span(max(0, int((now - ts).total_seconds() // 60)))


def row(t: agent_pb2.Ticket, now: datetime) -> QueueRow:
    due, due_in, overdue = "", "", False
    if t.HasField("reply_due_time"):
        at = t.reply_due_time.ToDatetime(UTC)
        due = at.strftime("%Y-%m-%d %H:%M UTC")
        minutes = int((at - now).total_seconds() // 60)
        overdue = minutes < 0
        due_in = f"overdue {_span(-minutes)}" if overdue else f"in {_span(minutes)}"
    return QueueRow(
        ticket=t.name.removeprefix("tickets/"),
        subject=t.subject or "(no subject)",
        status=STATUSES.get(t.status, ""),
        reason=REASONS.get(t.escalation_reason, ""),
        channel=CHANNELS.get(t.channel, ""),
        priority=PRIORITIES.get(t.priority, ""),
        assignee=t.assignee,
        waiting=_ago(t.create_time.ToDatetime(UTC), now),
        sentiment=round(t.sentiment, 2),
        due=due,
        due_in=due_in,
        overdue=overdue,
    )


def order(tickets: list[agent_pb2.Ticket]) -> list[agent_pb2.Ticket]:
    """Soonest due first (a ticket without a due time last); then escalations, then high priority,
    then the longest waiting."""

    def key(t: agent_pb2.Ticket) -> tuple[bool, int, bool, int, int]:
        due = t.reply_due_time.seconds if t.HasField("reply_due_time") else 0
        return (
            not t.HasField("reply_due_time"),
            due,
            t.status != agent_pb2.TICKET_STATUS_ESCALATED,
            -t.priority,
            t.create_time.seconds,
        )

    return sorted(tickets, key=key)
