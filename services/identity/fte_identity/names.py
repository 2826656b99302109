"""Identity's values in their wire form: customer resource names and timestamps."""

from __future__ import annotations

import uuid
from datetime import datetime

from fte_runtime.names import make_name
from google.protobuf.timestamp_pb2 import Timestamp


def customer_name(customer_id: uuid.UUID) -> str:
    return make_name("customers", customer_id)


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
