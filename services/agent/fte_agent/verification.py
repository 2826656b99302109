"""Connecting a customer's conversations across channels, proven by the customer.

A message *claims* an identifier when it was typed into the web form or written in the text ("I
wrote to you from ana@example.org", "my WhatsApp is +34 612 345 678"). A claim shares nothing:
until it is proven, the claimant gets no history of whoever owns the identifier (the identity
service keeps claims apart; the agent's history tool follows verified identifiers only).

To prove a claim the agent sends a one-time code over the claimed identifier's own channel (an
email to the address, a WhatsApp message to the number) through the notifier and tells the
customer, in their language, to send it back in this conversation. A message that is a code while
one of the customer's claims waits for one completes the verification: the identity service then
merges the claimant into the owner with an audit record, and history crosses both ways.

Codes never reach a log, the reasoner or the LLM engine: a code message is answered from the
language pack alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte.notifier.v1 import notifier_service_pb2, notifier_service_pb2_grpc
from fte_runtime.errors import error_info
from fte_runtime.identifiers import InvalidIdentifier, normalize

from fte_agent import metrics
from fte_agent.compose import Voice

C = common_pb2
K = identity_pb2
log = logging.getLogger("fte.agent.verification")

# A message that is a one-time code and little else ("123456", "code: 123 456").
_CODE_MESSAGE = re.compile(r"^\W*(?:[a-z]+\W*){0,3}?(\d{3})[ -]?(\d{3})\W*$", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
_PHONE = re.compile(r"(?<![\w+])\+\d[\d ()./-]{6,20}\d")
_DIGITS = re.compile(r"\D")

# What a claimed kind is proven over, and the kinds offered first (contested claims before others).
_CODE_CHANNEL = {K.IDENTIFIER_KIND_EMAIL: C.CHANNEL_EMAIL, K.IDENTIFIER_KIND_PHONE: C.CHANNEL_WHATSAPP}


def code_in(text: str) -> str:
    """The code when the message is one, else ""."""
    found = _CODE_MESSAGE.match(text.strip())
    return found.group(1) + found.group(2) if found else ""


def mentioned(text: str) -> list[identity_service_pb2.IdentifierInput]:
    """Email addresses and international phone numbers written in a message, as claims."""
    out: list[identity_service_pb2.IdentifierInput] = []
    for address in dict.fromkeys(m.group(0).rstrip(".") for m in _EMAIL.finditer(text)):
        out.append(identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_EMAIL, value=address))
    for number in dict.fromkeys("+" + _DIGITS.sub("", m.group(0)) for m in _PHONE.finditer(text)):
        if 8 <= len(number) <= 16:
            out.append(identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_PHONE, value=number))
    return out[:4]


# Mentioned numbers are international ("+..."), so no region is needed to read them.
_NO_REGION = "ZZ"


def mention_keys(text: str) -> set[tuple[int, str]]:
    """The (kind, value) of each mention as identity stores it (the runtime's normalization: a
    case-folded email, an E.164 number); a mention identity would refuse is left out."""
    keys: set[tuple[int, str]] = set()
    for m in mentioned(text):
        try:
            found = normalize(m.kind, m.value, _NO_REGION)
        except InvalidIdentifier:
            continue
        keys.add((found.kind, found.value))
    return keys


def mask(kind: int, value: str) -> str:
    """How the claimed identifier is named back to the claimant: enough to recognise, no more."""
    if kind == K.IDENTIFIER_KIND_EMAIL and "@" in value:
        local, domain = value.split("@", 1)
        return f"{local[:1]}***@{domain}"
    return f"{value[:3]}{'*' * max(0, len(value) - 5)}{value[-2:]}"


def code_request_id(channel: int, channel_message_id: str, expire_time: datetime) -> str:
    """The notifier key of one code delivery: a redelivered message that started a new code sends
    the new code; the same code is never sent twice."""
    digest = hashlib.sha256(f"{channel}:{channel_message_id}:{expire_time.isoformat()}".encode()).hexdigest()[:40]
    return f"agent-code-{digest}"


@dataclass(frozen=True, slots=True)
class Completed:
    """What a code message did: the reply sentence, and the customer it belongs to now."""

    text: str
    outcome: str
    customer: identity_pb2.Customer


class Verifier:
    def __init__(
        self,
        identity: identity_service_pb2_grpc.IdentityServiceAsyncStub,
        notifier: notifier_service_pb2_grpc.NotifierServiceAsyncStub,
    ) -> None:
        self.identity = identity
        self.notifier = notifier

    async def complete(self, customer: identity_pb2.Customer, code: str, voice: Voice) -> Completed:
        """Complete the customer's waiting verification with the code. With no claim to complete
        (a code replayed after it worked, or sent where none was asked for) the answer says so."""
        claims = [i for i in customer.identifiers if not i.verified and i.kind in _CODE_CHANNEL]
        if not claims:
            metrics.VERIFICATIONS.labels("no_claim").inc()
            return Completed(voice.say("verify_none"), "none", customer)
        waiting = [i for i in claims if i.HasField("verification_expire_time")]
        # A live code first; else the newest claim, so an expired or locked code gets its own answer.
        claim = waiting[-1] if waiting else claims[-1]
        try:
            done = await self.identity.CompleteVerification(
                identity_service_pb2.CompleteVerificationRequest(
                    customer=customer.name,
                    identifier=identity_service_pb2.IdentifierInput(kind=claim.kind, value=claim.value),
                    code=code,
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise
            info = error_info(exc)
            reason = info.reason if info else ""
            metrics.VERIFICATIONS.labels(reason.lower() or "refused").inc()
            if reason == "WRONG_CODE":
                left = int((info.metadata.get("attempts_left") if info else None) or 0)
                key = "verify_wrong" if left > 0 else "verify_locked"
                return Completed(voice.say(key, left=left), "wrong", customer)
            if reason == "CODE_EXPIRED":
                return Completed(voice.say("verify_expired"), "expired", customer)
            if reason == "TOO_MANY_ATTEMPTS":
                return Completed(voice.say("verify_locked", left=0), "locked", customer)
            return Completed(voice.say("verify_none"), "none", customer)
        metrics.VERIFICATIONS.labels("merged" if done.HasField("merge") else "verified").inc()
        log.info(
            "verification completed",
            extra={"customer": done.customer.name, "merged": done.merge.source_customer if done.merge else ""},
        )
        return Completed(voice.say("verify_done"), "merged" if done.HasField("merge") else "verified", done.customer)

    async def claim(
        self, customer: identity_pb2.Customer, msg: message_events_pb2.MessageReceived
    ) -> identity_pb2.Customer:
        """Record what the message's text claims (the form's typed identifiers are claims already)."""
        held = {(i.kind, i.value) for i in customer.identifiers}
        for given in mentioned(msg.text_body):
            try:
                linked = await self.identity.LinkIdentifier(
                    identity_service_pb2.LinkIdentifierRequest(customer=customer.name, identifier=given)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    continue  # not a real address or number: nothing claimed
                raise
            if len(linked.customer.identifiers) > len(held):
                customer = linked.customer
                held = {(i.kind, i.value) for i in customer.identifiers}
        return customer

    async def offer(
        self,
        customer: identity_pb2.Customer,
        msg: message_events_pb2.MessageReceived,
        voice: Voice,
        *,
        typed: set[tuple[int, str]],
        written: set[tuple[int, str]],
        last_whatsapp: dict[str, datetime],
    ) -> str:
        """Send a code for one claim this message made and return the sentence that says so ("" when
        nothing was offered). What the sender typed as their own (the web form's fields) may get a
        code; an identifier only written in the text gets one only when another customer holds it
        proven, so that naming a colleague's address never mails them. Contested claims come first."""
        candidates = [
            i
            for i in customer.identifiers
            if not i.verified
            and i.kind in _CODE_CHANNEL
            and ((i.kind, i.value) in typed or ((i.kind, i.value) in written and i.contested))
            and not i.HasField("verification_expire_time")
        ]
        if not candidates:
            return ""
        claim = sorted(candidates, key=lambda i: (not i.contested, i.kind))[0]
        target = mask(claim.kind, claim.value)
        try:
            started = await self.identity.StartVerification(
                identity_service_pb2.StartVerificationRequest(
                    customer=customer.name,
                    identifier=identity_service_pb2.IdentifierInput(kind=claim.kind, value=claim.value),
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                metrics.VERIFICATIONS.labels("too_many_codes").inc()
                return voice.say("verify_busy", target=target)
            raise
        minutes = max(1, round((started.expire_time.ToDatetime(UTC) - datetime.now(UTC)).total_seconds() / 60))
        channel = _CODE_CHANNEL[claim.kind]
        request = notifier_service_pb2.SendMessageRequest(
            request_id=code_request_id(msg.channel, msg.channel_message_id, started.expire_time.ToDatetime(UTC)),
            channel=channel,
            recipient=claim.value if channel == C.CHANNEL_EMAIL else f"whatsapp:{claim.value}",
            subject=voice.say("verify_code_subject"),
            text_body=voice.say("verify_code", code=started.code, minutes=minutes),
            # Not filed under the ticket: the code is for the identifier's holder, not for staff.
        )
        if channel == C.CHANNEL_WHATSAPP:
            last = last_whatsapp.get(request.recipient)
            if last is not None:
                request.customer_last_message_time.FromDatetime(last)
        try:
            await self.notifier.SendMessage(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                raise
            # E.g. WhatsApp's 24-hour window is closed for that number: no free-form message may go.
            metrics.VERIFICATIONS.labels("unreachable").inc()
            return voice.say("verify_unreachable", target=target)
        metrics.VERIFICATIONS.labels("code_sent").inc()
        return voice.say("verify_offer", target=target, minutes=minutes)
