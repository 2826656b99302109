"""A client of the whole local stack for end-to-end tests: posts webhooks exactly as Twilio, Gmail
(through the fake mailbox and a signed Pub/Sub push) and a browser would, and reads what the mesh
did through its public APIs, every gRPC call through Envoy."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from agent_helpers import eventually  # type: ignore[import-not-found]
from fte.agent.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_service_pb2_grpc
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_gateway.settings import DEV_TWILIO_AUTH_TOKEN
from fte_runtime.grpc_client import connect
from fte_stack.fakes.gmail import build_email
from fte_stack.fakes.twilio import FakeTwilio, inbound_whatsapp
from fte_stack.stack import Stack


class E2E:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.gateway = f"http://127.0.0.1:{stack.ports['gateway']}"
        envoy = f"127.0.0.1:{stack.ports['envoy']}"
        self.channel = connect(envoy, token=stack.tokens["staff"], default_timeout=10)
        self.agent = agent_service_pb2_grpc.AgentServiceStub(self.channel)
        self.notifier = notifier_service_pb2_grpc.NotifierServiceStub(self.channel)
        self.identity = identity_service_pb2_grpc.IdentityServiceStub(self.channel)
        # No kept-alive connections: the gateway closes idle ones, and a POST racing that close
        # fails with a read error that says nothing about the system under test.
        self.http = httpx.AsyncClient(
            base_url=self.gateway, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.channel.close()

    def twilio(self) -> FakeTwilio:
        """The stack's fake Twilio: the WhatsApp replies as the customers' phones got them."""
        assert self.stack.providers is not None
        return self.stack.providers.twilio

    async def whatsapp(self, phone: str, body: str, sid: str | None = None, name: str = "Rosa") -> str:
        """POST the inbound webhook exactly as Twilio would, signature included."""
        url = f"{self.gateway}/webhooks/whatsapp"
        params, headers = inbound_whatsapp(url, phone, body, auth_token=DEV_TWILIO_AUTH_TOKEN, sid=sid or "", name=name)
        resp = await self.http.post("/webhooks/whatsapp", data=params, headers=headers)
        assert resp.status_code in (200, 204), resp.text
        return params["MessageSid"]

    async def email(self, sender: str, subject: str, text: str, *, authenticated: bool = True) -> str:
        """Deliver mail into the local fake mailbox; the stack pushes it to the gateway like Pub/Sub.
        `authenticated=False` is a spoofed From: Gmail stamps failed DKIM/SPF/DMARC on it."""
        message_id = f"<{uuid.uuid4().hex}@mail.customer.example>"
        raw = build_email(
            sender=sender,
            to="support@example.com",
            subject=subject,
            text=text,
            message_id=message_id,
            authenticated=authenticated,
        )
        assert self.stack.providers is not None
        async with httpx.AsyncClient(base_url=self.stack.providers.gmail.url, timeout=10) as fake:
            resp = await fake.post("/_fake/inbox", content=raw)
            assert resp.status_code in (200, 201), resp.text
        return message_id

    async def ticket_with_text(self, text: str, channel: int) -> agent_pb2.Ticket | None:
        request = agent_service_pb2.ListTicketsRequest(page_size=100, channel=channel)  # type: ignore[arg-type]
        tickets = await self.agent.ListTickets(request)
        for ticket in tickets.tickets:
            messages = await self.messages(ticket.name)
            if any(m.author == agent_pb2.AUTHOR_CUSTOMER and m.text.strip() == text for m in messages):
                return ticket
        return None

    async def messages(self, ticket: str) -> list[agent_pb2.Message]:
        reply = await self.agent.ListMessages(agent_service_pb2.ListMessagesRequest(ticket=ticket, page_size=100))
        return list(reply.messages)

    async def delivered_reply(self, ticket: str) -> agent_pb2.Message | None:
        for m in await self.messages(ticket):
            if m.author == agent_pb2.AUTHOR_AGENT and m.delivery_status >= common_pb2.DELIVERY_STATUS_SENT:
                return m
        return None

    async def answered(self, text: str, channel: int) -> tuple[agent_pb2.Ticket, agent_pb2.Message]:
        async def check() -> tuple[agent_pb2.Ticket, agent_pb2.Message] | None:
            ticket = await self.ticket_with_text(text, channel)
            if ticket is None:
                return None
            reply = await self.delivered_reply(ticket.name)
            return (ticket, reply) if reply is not None else None

        found: tuple[agent_pb2.Ticket, agent_pb2.Message] = await eventually(
            check, timeout=60, what=f"a delivered reply to {text!r}"
        )
        return found

    async def deliveries(self, ticket: str) -> list[Any]:
        reply = await self.notifier.ListDeliveries(
            notifier_service_pb2.ListDeliveriesRequest(ticket_id=ticket.split("/", 1)[1], page_size=100)
        )
        return list(reply.deliveries)

    # -- web form and status page ---------------------------------------------------------------

    async def form(
        self, email: str, message: str, *, phone: str = "", name: str = "Rosa", subject: str = "Help"
    ) -> str:
        """Submit the web support form; returns the ticket reference."""
        fields = {"name": name, "email": email, "subject": subject, "message": message}
        fields |= {"category": "general", "priority": "low"}
        if phone:
            fields["phone"] = phone
        resp = await self.http.post("/support/submit", json=fields)
        assert resp.status_code == 202, resp.text
        reference: str = resp.json()["reference"]
        return reference

    async def status(self, reference: str) -> dict[str, Any]:
        page = await self.http.get(f"/support/ticket/{reference}", headers={"Accept": "application/json"})
        body: dict[str, Any] = page.json() if page.status_code == 200 else {}
        return body

    async def status_reply(self, reference: str, text: str) -> None:
        """Type a reply into the ticket's status page."""
        resp = await self.http.post(f"/support/ticket/{reference}/reply", json={"message": text})
        assert resp.status_code == 202, resp.text

    async def status_messages(self, reference: str, count: int) -> list[dict[str, Any]]:
        """The status page's conversation once it holds at least `count` messages."""

        async def check() -> list[dict[str, Any]] | None:
            messages: list[dict[str, Any]] = (await self.status(reference)).get("messages", [])
            return messages if len(messages) >= count else None

        found: list[dict[str, Any]] = await eventually(check, timeout=60, what=f"{count} messages on {reference}")
        return found

    # -- what the notifier delivered ------------------------------------------------------------

    async def all_deliveries(self, channel: int) -> list[Any]:
        out: list[Any] = []
        token = ""
        while True:
            page = await self.notifier.ListDeliveries(
                notifier_service_pb2.ListDeliveriesRequest(
                    page_size=100,
                    page_token=token,
                    channel=channel,  # type: ignore[arg-type]
                )
            )
            out.extend(page.deliveries)
            token = page.next_page_token
            if not token:
                return out

    async def codes_sent_to(self, recipient: str, channel: int) -> list[str]:
        """Every one-time code the notifier delivered to the recipient (a phone or a mailbox)."""
        found = []
        for d in await self.all_deliveries(channel):
            if d.request_id.startswith("agent-code-") and d.recipient.lower() == recipient.lower():
                match = re.search(r"\b(\d{6})\b", d.text_body)
                if match:
                    found.append((d.create_time.ToNanoseconds(), match.group(1)))
        return [code for _, code in sorted(found)]

    async def new_code(self, recipient: str, channel: int, seen: int = 0) -> str:
        """The newest code delivered to the recipient, waiting until there are more than `seen`."""

        async def check() -> str | None:
            codes = await self.codes_sent_to(recipient, channel)
            return codes[-1] if len(codes) > seen else None

        code: str = await eventually(check, timeout=60, what=f"a one-time code for {recipient}")
        return code

    async def reply_after(self, text: str, channel: int, *, timeout: float = 60) -> tuple[agent_pb2.Ticket, str]:
        """The ticket holding the customer message `text` (newest tickets first) and the agent's
        delivered reply that follows that message."""

        async def check() -> tuple[agent_pb2.Ticket, str] | None:
            token = ""
            for _ in range(5):  # the message is recent: its ticket is among the newest
                page = await self.agent.ListTickets(
                    agent_service_pb2.ListTicketsRequest(
                        page_size=50,
                        page_token=token,
                        channel=channel,  # type: ignore[arg-type]
                    )
                )
                for ticket in page.tickets:
                    messages = await self.messages(ticket.name)
                    mine = [
                        n
                        for n, m in enumerate(messages)
                        if m.author == agent_pb2.AUTHOR_CUSTOMER and m.text.strip() == text.strip()
                    ]
                    if not mine:
                        continue
                    for m in messages[mine[-1] + 1 :]:
                        if m.author == agent_pb2.AUTHOR_AGENT and m.delivery_status >= common_pb2.DELIVERY_STATUS_SENT:
                            return ticket, str(m.text)
                    return None
                token = page.next_page_token
                if not token:
                    break
            return None

        found: tuple[agent_pb2.Ticket, str] = await eventually(check, timeout=timeout, what=f"a reply to {text!r}")
        return found
