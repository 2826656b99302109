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
    prefix = _prefix(enum.DESCRIPTOR)
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.DESCRIPTOR.values if v.number != 0}
