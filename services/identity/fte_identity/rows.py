"""The typed, frozen rows the store returns; plain values, so the rules can take them without SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class IdentifierRow:
    kind: int
    value: str
    raw_value: str
    verified: bool
    evidence: int
    create_time: datetime
    # A claim of an identifier another customer holds verified.
    contested: bool = False
    # When the code waiting to be sent back expires; None when no code waits.
    verification_expire_time: datetime | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.kind, self.value)


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: uuid.UUID
    display_name: str
    state: str
    merged_into: uuid.UUID | None
    create_time: datetime
    update_time: datetime
    identifiers: tuple[IdentifierRow, ...] = ()


@dataclass(frozen=True, slots=True)
class CustomerState:
    """A customer's lifecycle columns, read under a row lock."""

    id: uuid.UUID
    state: str
    merged_into: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class MergeRow:
    source: uuid.UUID
    target: uuid.UUID
    actor: str
    reason: str
    merge_time: datetime


@dataclass(frozen=True, slots=True)
class LinkedIdentifier:
    """A customer's own row for an identifier, locked for a verification."""

    id: int
    verified: bool


@dataclass(frozen=True, slots=True)
class PendingCode:
    """The newest code of a claimed identifier, as stored."""

    code_hash: bytes
    salt: bytes
    attempts: int
    max_attempts: int
    used: bool
    superseded: bool
    expired: bool


@dataclass(frozen=True, slots=True)
class StoredCode:
    id: int
    pending: PendingCode
