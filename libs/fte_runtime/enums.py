"""Names of protobuf enum values, read from their descriptors: no hand-written tables to keep in
step with the contracts."""

from __future__ import annotations

import re
from typing import Protocol

from google.protobuf.descriptor import EnumDescriptor


class _Enum(Protocol):
    @property
    def DESCRIPTOR(self) -> EnumDescriptor: ...


def _prefix(descriptor: EnumDescriptor) -> str:
    # Channel -> CHANNEL_, DeliveryStatus -> DELIVERY_STATUS_ (buf STANDARD's value prefix).
    return re.sub(r"(?<!^)(?=[A-Z])", "_", descriptor.name).upper() + "_"


def value_names(enum: _Enum) -> dict[int, str]:
    """Each value but the `_UNSPECIFIED` zero -> its short lower-case name:
    `CHANNEL_WEB_FORM` -> "web_form"."""
    return descriptor_value_names(enum.DESCRIPTOR)


def descriptor_value_names(descriptor: EnumDescriptor) -> dict[int, str]:
    """`value_names` from the descriptor itself (a message field's `enum_type`)."""
    prefix = _prefix(descriptor)
    return {v.number: v.name.removeprefix(prefix).lower() for v in descriptor.values if v.number != 0}
