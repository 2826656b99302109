"""What a tool returns: the contracts' messages as plain JSON an assistant reads, with enum values
as their short names (`CHANNEL_WEB_FORM` -> "web_form") and unset fields left out."""

from __future__ import annotations

from typing import Any

from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2
from fte.knowledge.v1 import knowledge_pb2
from fte_runtime.enums import value_names
from google.protobuf.timestamp_pb2 import Timestamp

CHANNELS = value_names(common_pb2.Channel)
PRIORITIES = value_names(common_pb2.Priority)
CATEGORIES = value_names(common_pb2.Category)
DELIVERY = value_names(common_pb2.DeliveryStatus)
REASONS = value_names(common_pb2.EscalationReason)
STATUSES = value_names(agent_pb2.TicketStatus)
AUTHORS = value_names(agent_pb2.Author)
KINDS = value_names(identity_pb2.IdentifierKind)
EVIDENCE = value_names(identity_pb2.Evidence)
CUSTOMER_STATES = value_names(identity_pb2.Customer.State)


def number(names: dict[int, str], name: str) -> int:
    """The enum value of a short name (0, unspecified, for none)."""
    return next((n for n, v in names.items() if v == name), 0)


def _time(ts: Timestamp) -> str | None:
    return ts.ToDatetime().isoformat() + "Z" if ts.seconds or ts.nanos else None


def _clean(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if v not in (None, "", [])}


def ticket(t: agent_pb2.Ticket) -> dict[str, Any]:
    return _clean(
        {
            "name": t.name,
            "customer": t.customer,
            "channel": CHANNELS.get(t.channel),
            "subject": t.subject,
            "status": STATUSES.get(t.status),
            "category": CATEGORIES.get(t.category),
            "priority": PRIORITIES.get(t.priority),
            "escalation_reason": REASONS.get(t.escalation_reason),
            "escalation_detail": t.escalation_detail,
            "assignee": t.assignee,
            "create_time": _time(t.create_time),
            "update_time": _time(t.update_time),
            "first_response_time": _time(t.first_response_time),
            "resolve_time": _time(t.resolve_time),
            "reply_due_time": _time(t.reply_due_time),
        }
    )


def message(m: agent_pb2.Message) -> dict[str, Any]:
    return _clean(
        {
            "name": m.name,
            "ticket": m.ticket,
            "author": AUTHORS.get(m.author),
            "channel": CHANNELS.get(m.channel),
            "text": m.text,
            "delivery_status": DELIVERY.get(m.delivery_status),
            "actor": m.actor,
            "create_time": _time(m.create_time),
        }
    )


def customer(c: identity_pb2.Customer) -> dict[str, Any]:
    return _clean(
        {
            "name": c.name,
            "display_name": c.display_name,
            "state": CUSTOMER_STATES.get(c.state),
            "merged_into": c.merged_into,
            "identifiers": [
                _clean(
                    {
                        "kind": KINDS.get(i.kind),
                        "value": i.value,
                        "verified": i.verified,
                        "evidence": EVIDENCE.get(i.evidence),
                        "contested": i.contested or None,
                    }
                )
                for i in c.identifiers
            ],
            "create_time": _time(c.create_time),
        }
    )


def article(a: knowledge_pb2.Article) -> dict[str, Any]:
    return _clean(
        {
            "name": a.name,
            "title": a.title,
            "body": a.body,
            "category": a.category,
            "tags": list(a.tags),
            "language": a.language,
            "url": a.url,
            "version": a.version,
            "update_time": _time(a.update_time),
        }
    )


def search_result(r: knowledge_pb2.SearchResult) -> dict[str, Any]:
    return _clean(
        {
            "article": r.article,
            "title": r.title,
            "url": r.url,
            "heading": r.heading,
            "text": r.chunk_text,
            "score": round(r.score, 4),
            "category": r.category,
            "language": r.language,
        }
    )
