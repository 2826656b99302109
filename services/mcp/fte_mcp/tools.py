"""The tools: each an input model (its JSON schema is what an assistant reads) and one function that
calls the mesh's gRPC contracts with the caller's own token, so the mesh enforces its scopes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import grpc
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2, knowledge_service_pb2_grpc
from fte_runtime.errors import error_info
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, model_validator
from pydantic_core import CoreSchema, core_schema

from fte_mcp import views


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls a tool: the mesh principal its bearer token maps to."""

    principal: str
    scopes: frozenset[str]
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Mesh:
    knowledge: knowledge_service_pb2_grpc.KnowledgeServiceAsyncStub
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub
    agent: agent_service_pb2_grpc.AgentServiceAsyncStub


@dataclass(frozen=True)
class Choice:
    """A string field limited to an enum's short names (read from the contract's descriptor): a
    JSON-schema `enum`, and an error naming the choices for anything else."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, names: Mapping[int, str]) -> Choice:
        return cls(tuple(sorted(names.values())))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.literal_schema(list(self.names))


class ToolInput(BaseModel):
    """A tool's arguments. Only the fields in `LOGGED` are written to the audit log as they are;
    any other one that is set is logged as its length (queries, reply texts, emails, phones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    LOGGED: ClassVar[frozenset[str]] = frozenset()

    def audit_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if value is None:
                continue
            summary[name] = value if name in self.LOGGED else f"[{len(str(value))} chars]"
        return summary


TICKET_NAME = r"^tickets/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
CUSTOMER_NAME = r"^customers/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
Ticket = Annotated[
    str, Field(pattern=TICKET_NAME, description='The ticket, "tickets/{ticket}" (as list_tickets returns it).')
]
Customer = Annotated[
    str,
    Field(pattern=CUSTOMER_NAME, description='The customer, "customers/{customer}" (as lookup_customer returns it).'),
]
PageToken = Annotated[
    str, Field(max_length=1000, description="The next_page_token of a previous call, for the next page.")
]
StatusName = Annotated[str, Choice.of(views.STATUSES)]
ChannelName = Annotated[str, Choice.of(views.CHANNELS)]
ReasonName = Annotated[str, Choice.of(views.REASONS)]
ActingFor = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="The person you act for (their staff username or name): recorded with the change.",
    ),
]
RequestId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=150,
        description="An idempotency key of your choosing (a UUID): a retry with the same key has its effect once.",
    ),
]


class SearchKnowledgeBase(ToolInput):
    LOGGED = frozenset({"top_k", "category", "language"})
    query: str = Field(min_length=1, max_length=2000, description="The question or search terms, in any language.")
    top_k: int = Field(default=5, ge=1, le=20, description="How many results, best first.")
    category: str | None = Field(
        default=None, max_length=100, description='Only articles of this category, e.g. "billing".'
    )
    language: str | None = Field(
        default=None, max_length=20, description='Only articles in this language (BCP 47, e.g. "en").'
    )


class GetArticle(ToolInput):
    LOGGED = frozenset({"article"})
    article: str = Field(
        pattern=r"^(articles/)?[a-z0-9][a-z0-9-]{0,199}$",
        description='The article, "articles/{slug}" as search_knowledge_base returns it, or just its slug.',
    )


class LookupCustomer(ToolInput):
    # Both are personal data: logged as lengths only.
    email: str | None = Field(default=None, min_length=3, max_length=320, description="The customer's email address.")
    phone: str | None = Field(
        default=None,
        min_length=5,
        max_length=40,
        description="The customer's phone number, with its country code (+...).",
    )

    @model_validator(mode="after")
    def _one(self) -> LookupCustomer:
        if (self.email is None) == (self.phone is None):
            raise ValueError("give exactly one of email or phone")
        return self


class GetCustomerHistory(ToolInput):
    LOGGED = frozenset({"customer", "page_size", "page_token"})
    customer: Customer
    page_size: int = Field(default=20, ge=1, le=100, description="Messages per page, newest first.")
    page_token: PageToken | None = None


class ListTickets(ToolInput):
    LOGGED = frozenset({"status", "channel", "customer", "escalation_reason", "assignee", "page_size", "page_token"})
    status: StatusName | None = Field(default=None, description="Only tickets in this status.")
    channel: ChannelName | None = Field(default=None, description="Only tickets opened on it.")
    customer: Customer | None = None
    escalation_reason: ReasonName | None = Field(default=None, description="Only tickets escalated for this reason.")
    assignee: str | None = Field(
        default=None, max_length=200, description="Only tickets assigned to this staff member."
    )
    page_size: int = Field(default=20, ge=1, le=100, description="Tickets per page, newest first.")
    page_token: PageToken | None = None


class GetTicket(ToolInput):
    LOGGED = frozenset({"ticket"})
    ticket: Ticket
    max_messages: int = Field(
        default=50, ge=0, le=100, description="How many of its messages to include, oldest first."
    )


class ReplyToTicket(ToolInput):
    LOGGED = frozenset({"ticket", "request_id", "acting_for"})
    ticket: Ticket
    text: str = Field(
        min_length=1,
        max_length=5000,
        description="The reply, sent to the customer on the ticket's own channel (email, WhatsApp or web form).",
    )
    request_id: RequestId | None = None
    acting_for: ActingFor | None = None


class EscalateTicket(ToolInput):
    LOGGED = frozenset({"ticket", "reason", "request_id", "acting_for"})
    ticket: Ticket
    reason: ReasonName = Field(default="manual", description="Why it needs a person.")
    detail: str | None = Field(default=None, max_length=2000, description="A note for the human team.")
    request_id: RequestId | None = None
    acting_for: ActingFor | None = None


Run = Callable[[Mesh, Caller, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    params: type[ToolInput]
    run: Run
    # The scopes its calls to the mesh need (the mesh checks them; a write tool is listed only
    # for a caller that holds them).
    scopes: tuple[str, ...]
    write: bool = False

    def allowed(self, caller: Caller) -> bool:
        return not self.write or set(self.scopes) <= caller.scopes


TOOLS: dict[str, Tool] = {}


def tool(
    name: str, title: str, params: type[ToolInput], scopes: tuple[str, ...], write: bool = False
) -> Callable[[Run], Run]:
    """Registers a tool; its docstring is the description an assistant reads."""

    def register(run: Run) -> Run:
        description = re.sub(r"\s+", " ", run.__doc__ or "").strip()
        TOOLS[name] = Tool(name, title, description, params, run, scopes, write)
        return run

    return register


@tool("search_knowledge_base", "Search the knowledge base", SearchKnowledgeBase, ("kb.read",))
async def search_knowledge_base(mesh: Mesh, caller: Caller, args: SearchKnowledgeBase) -> dict[str, Any]:
    """Searches the product's help-center articles (hybrid vector and full-text search) and returns
    the best-matching passages with their article, title, URL and score. Use it to answer product
    questions; cite the URL. Needs the scope kb.read."""
    reply = await mesh.knowledge.SearchKnowledge(
        knowledge_service_pb2.SearchKnowledgeRequest(
            query=args.query,
            top_k=args.top_k,
            categories=[args.category] if args.category else [],
            language=args.language or "",
        ),
        metadata=caller.metadata,
    )
    return {"results": [views.search_result(r) for r in reply.results], "query_language": reply.query_language}


@tool("get_article", "Read an article", GetArticle, ("kb.read",))
async def get_article(mesh: Mesh, caller: Caller, args: GetArticle) -> dict[str, Any]:
    """Reads one knowledge-base article whole (markdown body, category, tags, language, URL).
    Needs the scope kb.read."""
    name = args.article if args.article.startswith("articles/") else f"articles/{args.article}"
    reply = await mesh.knowledge.GetArticle(
        knowledge_service_pb2.GetArticleRequest(name=name), metadata=caller.metadata
    )
    return {"article": views.article(reply.article)}


@tool("lookup_customer", "Look up a customer", LookupCustomer, ("identity.read",))
async def lookup_customer(mesh: Mesh, caller: Caller, args: LookupCustomer) -> dict[str, Any]:
    """Finds the customer who owns an email address or a phone number: their name, state and
    every identifier with its evidence (verified means proven control of it; claimed means only
    typed or mentioned). With the scope tickets.read too, their latest tickets are included;
    without it the answer says they were left out. Needs the scope identity.read."""
    if args.email is not None:
        kind, value = identity_pb2.IDENTIFIER_KIND_EMAIL, args.email
    else:
        kind, value = identity_pb2.IDENTIFIER_KIND_PHONE, args.phone or ""
    reply = await mesh.identity.ListCustomers(
        identity_service_pb2.ListCustomersRequest(
            page_size=1,
            identifier=identity_service_pb2.IdentifierInput(kind=kind, value=value),
        ),
        metadata=caller.metadata,
    )
    if not reply.customers:
        return {"found": False}
    found = reply.customers[0]
    answer: dict[str, Any] = {"found": True, "customer": views.customer(found)}
    if "tickets.read" in caller.scopes:
        tickets = await mesh.agent.ListTickets(
            agent_service_pb2.ListTicketsRequest(customer=found.name, page_size=10), metadata=caller.metadata
        )
        answer["tickets"] = [views.ticket(t) for t in tickets.tickets]
    else:
        answer["omitted"] = ["tickets: the token lacks the scope tickets.read"]
    return answer


@tool("get_customer_history", "A customer's history", GetCustomerHistory, ("tickets.read",))
async def get_customer_history(mesh: Mesh, caller: Caller, args: GetCustomerHistory) -> dict[str, Any]:
    """A customer's tickets and messages across every channel (email, WhatsApp, web form), newest
    first, one page of messages at a time. Needs the scope tickets.read."""
    reply = await mesh.agent.GetCustomerHistory(
        agent_service_pb2.GetCustomerHistoryRequest(
            customer=args.customer, page_size=args.page_size, page_token=args.page_token or ""
        ),
        metadata=caller.metadata,
    )
    return {
        "tickets": [views.ticket(t) for t in reply.tickets],
        "messages": [views.message(m) for m in reply.messages],
        "next_page_token": reply.next_page_token,
    }


@tool("list_tickets", "List tickets", ListTickets, ("tickets.read",))
async def list_tickets(mesh: Mesh, caller: Caller, args: ListTickets) -> dict[str, Any]:
    """Lists support tickets, newest first, optionally only those in a status, on a channel, of a
    customer, escalated for a reason or assigned to someone. Pass next_page_token back as
    page_token for more. Needs the scope tickets.read."""
    reply = await mesh.agent.ListTickets(
        agent_service_pb2.ListTicketsRequest(
            page_size=args.page_size,
            page_token=args.page_token or "",
            status=agent_pb2.TicketStatus.ValueType(views.number(views.STATUSES, args.status or "")),
            channel=common_pb2.Channel.ValueType(views.number(views.CHANNELS, args.channel or "")),
            customer=args.customer or "",
            escalation_reason=common_pb2.EscalationReason.ValueType(
                views.number(views.REASONS, args.escalation_reason or "")
            ),
            assignee=args.assignee or "",
        ),
        metadata=caller.metadata,
    )
    return {"tickets": [views.ticket(t) for t in reply.tickets], "next_page_token": reply.next_page_token}


@tool("get_ticket", "Read a ticket", GetTicket, ("tickets.read",))
async def get_ticket(mesh: Mesh, caller: Caller, args: GetTicket) -> dict[str, Any]:
    """Reads one ticket (status, channel, priority, escalation, due time) and its conversation,
    oldest message first. Needs the scope tickets.read."""
    reply = await mesh.agent.GetTicket(agent_service_pb2.GetTicketRequest(name=args.ticket), metadata=caller.metadata)
    answer: dict[str, Any] = {"ticket": views.ticket(reply.ticket)}
    if args.max_messages:
        messages = await mesh.agent.ListMessages(
            agent_service_pb2.ListMessagesRequest(ticket=args.ticket, page_size=args.max_messages),
            metadata=caller.metadata,
        )
        answer["messages"] = [views.message(m) for m in messages.messages]
        answer["more_messages"] = bool(messages.next_page_token)
    return answer


@tool("reply_to_ticket", "Reply to a ticket", ReplyToTicket, ("tickets.write",), write=True)
async def reply_to_ticket(mesh: Mesh, caller: Caller, args: ReplyToTicket) -> dict[str, Any]:
    """Sends a reply to the ticket's customer on the ticket's own channel, recorded as a staff
    reply of this token's principal (and of acting_for, when given). It reaches a real customer:
    write it as the support team would. Needs the scope tickets.write."""
    reply = await mesh.agent.ReplyToTicket(
        agent_service_pb2.ReplyToTicketRequest(
            ticket=args.ticket, text=args.text, request_id=args.request_id or "", actor=args.acting_for or ""
        ),
        metadata=caller.metadata,
    )
    return {"message": views.message(reply.message)}


@tool("escalate_ticket", "Escalate a ticket", EscalateTicket, ("tickets.write",), write=True)
async def escalate_ticket(mesh: Mesh, caller: Caller, args: EscalateTicket) -> dict[str, Any]:
    """Hands a ticket to the human support team, with a reason and an optional note for them; the
    team's queue shows it at once. Needs the scope tickets.write."""
    reply = await mesh.agent.EscalateTicket(
        agent_service_pb2.EscalateTicketRequest(
            ticket=args.ticket,
            reason=common_pb2.EscalationReason.ValueType(views.number(views.REASONS, args.reason)),
            detail=args.detail or "",
            request_id=args.request_id or "",
            actor=args.acting_for or "",
        ),
        metadata=caller.metadata,
    )
    return {"ticket": views.ticket(reply.ticket)}


def mesh_error(exc: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(code, reason) of a failed mesh call, for the tool's error and the audit line."""
    info = error_info(exc)
    return exc.code().name, info.reason if info is not None else ""
