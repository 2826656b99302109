"""Delivery statuses only move forward: queued -> sent -> delivered -> read; failed is final and
can only replace queued or sent (a message the recipient got cannot fail afterwards)."""

from __future__ import annotations

from collections.abc import Iterable

from fte.common.v1 import common_pb2

QUEUED = common_pb2.DELIVERY_STATUS_QUEUED
SENT = common_pb2.DELIVERY_STATUS_SENT
DELIVERED = common_pb2.DELIVERY_STATUS_DELIVERED
READ = common_pb2.DELIVERY_STATUS_READ
FAILED = common_pb2.DELIVERY_STATUS_FAILED

_RANK: dict[int, int] = {int(QUEUED): 1, int(SENT): 2, int(DELIVERED): 3, int(READ): 4}


def advances(current: int, new: int) -> bool:
    """True when moving from `current` to `new` is forward."""
    if current == FAILED or new not in (*_RANK, FAILED):
        return False
    if new == FAILED:
        return current in (QUEUED, SENT)
    return _RANK[new] > _RANK.get(current, 0)


def combine(part_statuses: Iterable[int]) -> int:
    """A multi-part message's status: failed if any part failed, else its least advanced part."""
    statuses = list(part_statuses)
    if FAILED in statuses:
        return FAILED
    return min(statuses, key=lambda s: _RANK[s])
