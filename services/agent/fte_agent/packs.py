"""Language packs (data/languages/<code>.toml) and the playbook (the deployment's voice).

A pack holds every customer-facing sentence of one language, its safety-net rules (escalation
reasons, and whole messages that are only thanks or a greeting), its prompt-injection markers and
the words that file a ticket under a category. Every supported
language must have a complete pack: the agent refuses to start otherwise, so no customer ever gets
a reply with a missing sentence.
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fte.common.v1 import common_pb2
from fte_runtime.enums import value_names

from fte_agent import reasons
from fte_agent.hours import HoursError, SupportHours

DEFAULT_LANGUAGE = "en"
# The non-escalation intents a pack's `[intents]` table may settle by rule: the ones a whole
# message of a few fixed words can be (the reader's other intents need reading).
RULED_INTENTS = ("thanks", "greeting", "unclear")


class PackError(ValueError):
    """A language pack or playbook is missing or incomplete."""


@dataclass(frozen=True, slots=True)
class Pack:
    code: str
    name: str
    when_format: str
    phrases: dict[str, str]
    escalation: dict[str, str]
    rules: dict[str, tuple[re.Pattern[str], ...]]
    injection: tuple[re.Pattern[str], ...]
    # Ticket category name -> the words that file a message under it, in the pack's order.
    categories: dict[str, tuple[re.Pattern[str], ...]]
    # Non-escalation intent -> whole-message patterns that settle it (a message that is only thanks).
    intents: dict[str, tuple[re.Pattern[str], ...]] = field(default_factory=dict)

    def phrase(self, key: str, **values: object) -> str:
        return self.phrases[key].format(**values)


@dataclass(frozen=True, slots=True)
class Playbook:
    company: str
    product: str
    product_description: str
    signature: str
    tone: str
    support_hours: str
    follow_up_hours: float
    competitors: tuple[str, ...]
    # When people answer (the `[hours]` table): what a reply's due time is counted in.
    hours: SupportHours


def _data() -> Any:
    return importlib.resources.files("fte_agent") / "data"


def _compile(patterns: list[str], where: str) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(re.compile(p, re.IGNORECASE) for p in patterns)
    except re.error as exc:
        raise PackError(f"{where}: bad pattern: {exc}") from exc


@cache
def load(code: str) -> Pack:
    path = _data() / "languages" / f"{code}.toml"
    if not path.is_file():
        raise PackError(f"no language pack for {code!r} (data/languages/{code}.toml)")
    raw = tomllib.loads(path.read_text("utf-8"))
    rules = {name: _compile(list(p), f"{code} rules.{name}") for name, p in raw.get("rules", {}).items()}
    unknown = set(rules) - set(reasons.learned())
    if unknown:
        raise PackError(f"{code}: rules for unknown reasons {sorted(unknown)}")
    categories = {name: _compile(list(p), f"{code} categories.{name}") for name, p in raw.get("categories", {}).items()}
    unknown = set(categories) - set(value_names(common_pb2.Category).values())
    if unknown:
        raise PackError(f"{code}: unknown ticket categories {sorted(unknown)}")
    intents = {name: _compile(list(p), f"{code} intents.{name}") for name, p in raw.get("intents", {}).items()}
    unknown = set(intents) - set(RULED_INTENTS)
    if unknown:
        raise PackError(f"{code}: intents without rules {sorted(unknown)}")
    return Pack(
        code=code,
        name=str(raw.get("name", code)),
        when_format=str(raw.get("when_format", "%Y-%m-%d %H:%M UTC")),
        phrases=dict(raw.get("phrases", {})),
        escalation=dict(raw.get("escalation", {})),
        rules=rules,
        injection=_compile(list(raw.get("injection", {}).get("patterns", [])), f"{code} injection"),
        categories=categories,
        intents=intents,
    )


def require(languages: tuple[str, ...]) -> dict[str, Pack]:
    """The packs of the supported languages, each checked complete against the English pack."""
    reference = load(DEFAULT_LANGUAGE)
    packs: dict[str, Pack] = {}
    for code in languages:
        pack = load(code)
        missing = [f"phrases.{k}" for k in reference.phrases if not pack.phrases.get(k, "").strip()]
        missing += [f"escalation.{r.name}" for r in reasons.registry() if not pack.escalation.get(r.name, "").strip()]
        missing += [f"rules.{k}" for k in reference.rules if k not in pack.rules]
        missing += [f"categories.{k}" for k in reference.categories if k not in pack.categories]
        if not pack.injection:
            missing.append("injection.patterns")
        if missing:
            raise PackError(f"the language pack {code!r} is incomplete: {', '.join(missing)}")
        packs[code] = pack
    if DEFAULT_LANGUAGE not in packs:
        packs[DEFAULT_LANGUAGE] = reference
    return packs


def playbook(path: Path | None = None) -> Playbook:
    """The playbook at `path`, or the packaged default (the sample product's voice)."""
    text = path.read_text("utf-8") if path else (_data() / "playbook.toml").read_text("utf-8")
    raw = tomllib.loads(text)
    try:
        return Playbook(
            company=str(raw["company"]),
            product=str(raw.get("product", raw["company"])),
            product_description=str(raw.get("product_description", "")),
            signature=str(raw["signature"]),
            tone=str(raw.get("tone", "")),
            support_hours=str(raw.get("support_hours", "")),
            follow_up_hours=float(raw.get("follow_up_hours", 24)),
            competitors=tuple(str(c).lower() for c in raw.get("competitors", [])),
            hours=SupportHours.parse(dict(raw.get("hours", {}))),
        )
    except HoursError as exc:
        raise PackError(f"the playbook's {exc}") from exc
    except KeyError as exc:
        raise PackError(f"the playbook lacks {exc.args[0]!r}") from exc
