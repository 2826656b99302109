"""The dead-letter queues, for admins: what each topic's DLQ holds (with its error, origin and
whether it was replayed), one record with customer text redacted, and replaying chosen records to
their topic once the cause is fixed.

Everything goes through fte_runtime.dlq, as `python -m fte_runtime.dlq` does, on the broker the
live queue reads (`KAFKA_BOOTSTRAP`): a replay is audited to `fte.dlq.replays` with the staff member
as its actor, and in the console's audit log; a record replayed before is skipped unless "again" is
chosen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.errors import KafkaError
from fte_runtime import dlq, topics
from fte_runtime.topics import dead_letter_topic
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fte_console.accounts import Session
from fte_console.pages import admin_action, admin_page, deps, render, text

# Records one replay form may name (each checkbox is a form field).
MAX_REPLAY = 200
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Row:
    topic: str
    partition: int
    offset: int
    time: str
    event_type: str
    error: str
    origin: str  # topic partition:offset the record was consumed from
    replayed: bool

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Queue:
    topic: str
    dead_letter_topic: str
    rows: list[Row]


def _row(letter: dlq.DeadLetter, done: set[str]) -> Row:
    return Row(
        topic=letter.topic,
        partition=letter.partition,
        offset=letter.offset,
        time=letter.header("dlq_time"),
        event_type=letter.event_type,
        error=letter.error,
        origin=f"{letter.header('dlq_topic') or letter.topic} {letter.header('dlq_partition')}:"
        f"{letter.header('dlq_offset')}",
        replayed=letter.ref in done,
    )


async def _broker(call: Awaitable[T]) -> T:
    try:
        return await call
    except (KafkaError, OSError) as exc:
        raise HTTPException(502, "the broker did not answer; try again") from exc


def _topic(name: str) -> str:
    if name not in topics.ALL:
        raise HTTPException(404, f"no dead-letter queue for {name!r}")
    return name


@admin_page
async def list_page(request: Request, session: Session) -> Response:
    return await _list(request, session, [])


async def _list(request: Request, session: Session, results: list[dict[str, Any]], status: int = 200) -> Response:
    bootstrap = deps(request).settings.kafka_bootstrap
    wanted = request.query_params.get("topic", "")
    shown = [_topic(wanted)] if wanted else list(topics.ALL)
    # One read per DLQ and one of the replay audit, at once.
    done, letters = await _broker(
        asyncio.gather(dlq.replayed_refs(bootstrap), asyncio.gather(*(dlq.read(bootstrap, t) for t in shown)))
    )
    queues = [
        Queue(t, dead_letter_topic(t), [_row(letter, done) for letter in found])
        for t, found in zip(shown, letters, strict=True)
    ]
    return render(
        request,
        "deadletters.html",
        status,
        session=session,
        queues=queues,
        results=results,
        topic=wanted,
        all_topics=list(topics.ALL),
    )


@admin_page
async def show_page(request: Request, session: Session) -> Response:
    bootstrap = deps(request).settings.kafka_bootstrap
    topic = _topic(request.path_params["topic"])
    partition, offset = request.path_params["partition"], request.path_params["offset"]
    letters, audit = await _broker(asyncio.gather(dlq.read(bootstrap, topic), dlq.read_audit(bootstrap)))
    found = [d for d in letters if (d.partition, d.offset) == (partition, offset)]
    if not found:
        raise HTTPException(404, f"no record {partition}:{offset} in {dead_letter_topic(topic)}")
    letter = found[0]
    replays = [entry for entry in audit if entry.get("dead_letter") == letter.ref]
    return render(
        request,
        "dead_letter.html",
        session=session,
        row=_row(letter, {letter.ref} if replays else set()),
        record=json.dumps(dlq.redacted(letter), indent=2, ensure_ascii=False),
        replays=replays,
    )


@admin_action(max_fields=MAX_REPLAY + 3)
async def replay(request: Request, session: Session, form: FormData) -> Response:
    """Replays the checked records (`record`: PARTITION:OFFSET, repeated) of one topic's DLQ."""
    bootstrap = deps(request).settings.kafka_bootstrap
    topic = _topic(str(form.get("topic", "")))
    again = form.get("again") == "1"
    try:
        wanted = {tuple(int(x) for x in str(ref).split(":", 1)) for ref in form.getlist("record")}
    except ValueError:
        return text("each record is PARTITION:OFFSET", 400)
    if not wanted or any(len(ref) != 2 for ref in wanted):
        return text("choose the records to replay", 400)
    letters = await _broker(dlq.read(bootstrap, topic))
    chosen = [d for d in letters if (d.partition, d.offset) in wanted]
    if len(chosen) != len(wanted):
        return text(f"not all of these records are in {dead_letter_topic(topic)}; reload the page", 409)
    actor = session.user.username
    done = await _broker(dlq.replay(bootstrap, chosen, actor=actor, again=again))
    accounts = deps(request).accounts
    for result in done:
        action = "dlq_replay_skipped" if result.skipped else "dlq_replay"
        await accounts.audit(actor, action, result.dead_letter, replayed_to=result.to, again=again)
    results = [{"dead_letter": r.dead_letter, "to": r.to, "skipped": r.skipped} for r in done]
    return await _list(request, session, results)
