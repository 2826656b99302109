"""What a tool returns: the contracts' messages as plain JSON an assistant reads.

Each message goes through `json_format.MessageToDict`; a view then keeps only the fields its
tools allow (by proto field name, in that order), with enum values as their short names
(`CHANNEL_WEB_FORM` -> "web_form") and unset fields left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fte.agent.v1 import agent_pb2
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2
from fte.knowledge.v1 import knowledge_pb2
from fte_runtime.enums import descriptor_value_names, value_names
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

CHANNELS = value_names(common_pb2.Channel)
STATUSES = value_names(agent_pb2.TicketStatus)
REASONS = value_names(common_pb2.EscalationReason)


def number(names: dict[int, str], name: str) -> int:
    """The enum value of a short name (0, unspecified, for none)."""
    return next((n for n, v in names.items() if v == name), 0)


@cache
def _enum_names(descriptor: EnumDescriptor) -> dict[int, str]:
    return descriptor_value_names(descriptor)


# A value the tools leave out: unset, empty, or the unspecified enum value.
def _absent(value: Any) -> bool:
    return value in (None, "", [])


@dataclass(frozen=True)
class View:
    """The fields of one message a tool returns."""

    fields: tuple[str, ...]
    # proto field name -> the key the tools have always used for it.
    rename: Mapping[str, str] = field(default_factory=dict)
    # Repeated or singular message fields, shown through their own view.
    nested: Mapping[str, View] = field(default_factory=dict)
    # Flags shown only when set (a false one says nothing the reader needs).
    omit_false: frozenset[str] = frozenset()
    # Last touches to a value, e.g. a score's rounding.
    finish: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    def render(self, message: Message) -> dict[str, Any]:
        data = json_format.MessageToDict(
            message,
            # Booleans and numbers keep their false / zero values; the view drops what it must.
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True,
            use_integers_for_enums=True,
            unquote_int64_if_possible=True,
        )
        # The C (upb) descriptors are typed apart from the Python ones but have the same interface.
        fields: Mapping[str, FieldDescriptor] = message.DESCRIPTOR.fields_by_name  # type: ignore[assignment]
        return self._pick(fields, data)

    def _pick(self, fields: Mapping[str, FieldDescriptor], data: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.fields:
            value = data.get(name)
            fd = fields[name]
            if name in self.nested:
                assert fd.message_type is not None
                sub, sub_fields = self.nested[name], fd.message_type.fields_by_name
                if isinstance(value, list):
                    value = [sub._pick(sub_fields, v) for v in value]
                elif value is not None:
                    value = sub._pick(sub_fields, value)
            elif fd.enum_type is not None and value is not None:
                value = _enum_names(fd.enum_type).get(value)
            if name in self.omit_false and value is False:
                continue
            if name in self.finish and value is not None:
                value = self.finish[name](value)
            if not _absent(value):
                out[self.rename.get(name, name)] = value
        return out


TICKET = View(
    (
        "name",
        "customer",
        "channel",
        "subject",
        "status",
        "category",
        "priority",
        "escalation_reason",
        "escalation_detail",
        "assignee",
        "create_time",
        "update_time",
        "first_response_time",
        "resolve_time",
        "reply_due_time",
    )
)
MESSAGE = View(("name", "ticket", "author", "channel", "text", "delivery_status", "actor", "create_time"))
IDENTIFIER = View(("kind", "value", "verified", "evidence", "contested"), omit_false=frozenset({"contested"}))
CUSTOMER = View(
    ("name", "display_name", "state", "merged_into", "identifiers", "create_time"), nested={"identifiers": IDENTIFIER}
)
ARTICLE = View(("name", "title", "body", "category", "tags", "language", "url", "version", "update_time"))
SEARCH_RESULT = View(
    ("article", "title", "url", "heading", "chunk_text", "score", "category", "language"),
    rename={"chunk_text": "text"},
    finish={"score": lambda v: round(v, 4)},
)


def ticket(t: agent_pb2.Ticket) -> dict[str, Any]:
    return TICKET.render(t)


def message(m: agent_pb2.Message) -> dict[str, Any]:
    return MESSAGE.render(m)


def customer(c: identity_pb2.Customer) -> dict[str, Any]:
    return CUSTOMER.render(c)


def article(a: knowledge_pb2.Article) -> dict[str, Any]:
    return ARTICLE.render(a)


def search_result(r: knowledge_pb2.SearchResult) -> dict[str, Any]:
    return SEARCH_RESULT.render(r)
