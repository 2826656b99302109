"""The registry of escalation reasons (data/reasons.toml): proto value, whether the reader learns it,
whether the LLM may name it, the ticket priority and the detail stored for staff."""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import dataclass
from functools import cache

from fte.common.v1 import common_pb2

C = common_pb2
_PRIORITIES = {"low": C.PRIORITY_LOW, "medium": C.PRIORITY_MEDIUM, "high": C.PRIORITY_HIGH}


@dataclass(frozen=True, slots=True)
class Reason:
    name: str
    value: int
    learned: bool
    llm: bool
    priority: int
    detail: str


@cache
def registry() -> tuple[Reason, ...]:
    """Every reason, in precedence order (the first whose rule matches names an escalation)."""
    raw = tomllib.loads((importlib.resources.files("fte_agent") / "data" / "reasons.toml").read_text("utf-8"))
    reasons = []
    for name, item in raw.items():
        value = C.EscalationReason.Value(item["proto"])
        if value != C.EscalationReason.Value(f"ESCALATION_REASON_{name.upper()}"):
            raise ValueError(f"reason {name!r} must map to ESCALATION_REASON_{name.upper()}")
        reasons.append(
            Reason(name, value, bool(item["learned"]), bool(item["llm"]), _PRIORITIES[item["priority"]], item["detail"])
        )
    declared = {r.value for r in reasons}
    missing = [v.name for v in C.EscalationReason.DESCRIPTOR.values if v.number and v.number not in declared]
    if missing:
        raise ValueError(f"reasons.toml lacks {missing}")
    return tuple(reasons)


def by_name(name: str) -> Reason:
    for reason in registry():
        if reason.name == name:
            return reason
    raise KeyError(name)


def by_value(value: int) -> Reason:
    for reason in registry():
        if reason.value == value:
            return reason
    raise KeyError(value)


def name_of(value: int) -> str:
    """The registry name of a proto value ("" for unspecified or unknown)."""
    return next((r.name for r in registry() if r.value == value), "")


def learned() -> tuple[str, ...]:
    return tuple(r.name for r in registry() if r.learned)


def llm_allowed() -> tuple[str, ...]:
    return tuple(r.name for r in registry() if r.llm)
