"""What each channel means for identity, replies and history."""

from __future__ import annotations

from fte.common.v1 import common_pb2
from fte.events.v1 import message_events_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2
from fte_runtime.enums import value_names

C = common_pb2
K = identity_pb2

NAMES: dict[int, str] = value_names(C.Channel)

# The channels whose history an identifier kind opens up once verified.
_KIND_CHANNELS: dict[int, tuple[int, ...]] = {
    K.IDENTIFIER_KIND_EMAIL: (C.CHANNEL_EMAIL, C.CHANNEL_WEB_FORM),
    K.IDENTIFIER_KIND_PHONE: (C.CHANNEL_WHATSAPP,),
    K.IDENTIFIER_KIND_WHATSAPP: (C.CHANNEL_WHATSAPP,),
    K.IDENTIFIER_KIND_WHATSAPP_BSUID: (C.CHANNEL_WHATSAPP,),
}


def name(channel: int) -> str:
    return NAMES.get(channel, "unknown")


def identifiers(msg: message_events_pb2.MessageReceived) -> list[identity_service_pb2.IdentifierInput]:
    s = msg.sender
    out: list[identity_service_pb2.IdentifierInput] = []
    if msg.channel == C.CHANNEL_WHATSAPP:
        if s.whatsapp_address:
            out.append(identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_WHATSAPP, value=s.whatsapp_address))
        elif s.phone:
            out.append(
                identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_WHATSAPP, value=f"whatsapp:{s.phone}")
            )
        if s.whatsapp_user_id and not (s.whatsapp_address or s.phone):
            out.append(
                identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_WHATSAPP_BSUID, value=s.whatsapp_user_id)
            )
        return out
    if s.email:
        out.append(identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_EMAIL, value=s.email))
    if msg.channel == C.CHANNEL_WEB_FORM and s.phone:
        out.append(identity_service_pb2.IdentifierInput(kind=K.IDENTIFIER_KIND_PHONE, value=s.phone))
    return out


def recipient(msg: message_events_pb2.MessageReceived) -> str:
    s = msg.sender
    if msg.channel == C.CHANNEL_WHATSAPP:
        return s.whatsapp_address or (f"whatsapp:{s.phone}" if s.phone else "")
    return s.email


def history_channels(customer: identity_pb2.Customer, current: int) -> list[int]:
    """Channels whose history may be used: the current one, and those reached through a verified
    identifier. A claimed (unverified) identifier shares nothing."""
    allowed = {current}
    for ident in customer.identifiers:
        if ident.verified:
            allowed.update(_KIND_CHANNELS.get(ident.kind, ()))
    return sorted(allowed)
