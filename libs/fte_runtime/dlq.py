"""The dead-letter queues, operable: list what was dead-lettered per topic with its error, show one
record with customer text redacted, and replay chosen records to their topic once the cause is
fixed.

    python -m fte_runtime.dlq [--bootstrap HOST:PORT] list [TOPIC ...]
    python -m fte_runtime.dlq show TOPIC PARTITION OFFSET
    python -m fte_runtime.dlq replay TOPIC (PARTITION:OFFSET ... | --all) --actor NAME [--again]

TOPIC is the original topic (`fte.tickets.incoming`); its records are read from `<TOPIC>.dlq`.
A replay sends the record (value, key and event headers unchanged, so the consumers' exactly-once
rules apply to it as to a redelivery) to the topic it came from, and appends an audit record to
`fte.dlq.replays`: which dead letter, where it went, who replayed it and when. A dead letter
replayed before is skipped unless `--again` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from google.protobuf import json_format, symbol_database
from google.protobuf.message import DecodeError

from fte_runtime import topics
from fte_runtime.kafka import ensure_topics
from fte_runtime.topics import dead_letter_topic

# Headers the DLQ adds; a replayed record goes back without them.
_DLQ_HEADERS = ("dlq_error", "dlq_topic", "dlq_partition", "dlq_offset", "dlq_time")
# Fields shown as they are by `show`; every other string is customer data and is redacted.
_SHOWN_FIELDS = ("channel", "category", "priority", "status", "reason", "language", "kind", "type")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str  # the original topic
    partition: int  # in the DLQ topic
    offset: int  # in the DLQ topic
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def ref(self) -> str:
        return f"{dead_letter_topic(self.topic)}/{self.partition}/{self.offset}"

    def header(self, name: str) -> str:
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), "")

    @property
    def error(self) -> str:
        return self.header("dlq_error")

    @property
    def event_type(self) -> str:
        return self.header("ce_type")


@dataclass(frozen=True, slots=True)
class Replayed:
    dead_letter: str
    to: str  # topic/partition/offset it was sent to; "" when skipped
    skipped: bool


async def read(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every record of `topic`'s DLQ, oldest first per partition."""
    return [
        DeadLetter(topic, r.partition, r.offset, r.key, r.value, list(r.headers or ()))
        for r in await _read_all(bootstrap, dead_letter_topic(topic))
    ]


async def read_audit(bootstrap: str) -> list[dict[str, Any]]:
    """The audit records of every replay so far."""
    return [json.loads(r.value) for r in await _read_all(bootstrap, topics.DLQ_REPLAYS) if r.value]


async def replayed_refs(bootstrap: str) -> set[str]:
    return {entry["dead_letter"] for entry in await read_audit(bootstrap)}


async def _read_all(bootstrap: str, name: str) -> list[ConsumerRecord]:
    """Every record of a topic up to its end offsets now, by partition then offset; nothing is
    committed (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(name)
        if not partitions:
            # A consumer with no subscription knows only the topics of its first metadata answer.
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(name) or set()
        parts = [TopicPartition(name, p) for p in sorted(partitions)]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[ConsumerRecord] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(*parts, timeout_ms=1000)).items():
                out += [r for r in records if r.offset < ends[tp]]
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def replay(bootstrap: str, letters: Sequence[DeadLetter], *, actor: str, again: bool = False) -> list[Replayed]:
    """Sends each dead letter back to its topic (see the module doc); audited, once each unless
    `again`."""
    if not actor.strip():
        raise ValueError("a replay needs the name of who does it (--actor)")
    await ensure_topics(bootstrap, [topics.DLQ_REPLAYS], dead_letters=False)
    done = set() if again else await replayed_refs(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    out: list[Replayed] = []
    try:
        for letter in letters:
            if letter.ref in done:
                out.append(Replayed(letter.ref, "", skipped=True))
                continue
            origin = letter.header("dlq_topic") or letter.topic
            headers = [(k, v) for k, v in letter.headers if k not in _DLQ_HEADERS]
            sent = await producer.send_and_wait(origin, value=letter.value, key=letter.key, headers=headers)
            to = f"{sent.topic}/{sent.partition}/{sent.offset}"
            entry = {
                "dead_letter": letter.ref,
                "error": letter.error,
                "event_id": letter.header("ce_id"),
                "replayed_to": to,
                "actor": actor,
                "time": datetime.now(UTC).isoformat(),
            }
            await producer.send_and_wait(topics.DLQ_REPLAYS, value=json.dumps(entry).encode(), key=letter.ref.encode())
            done.add(letter.ref)
            out.append(Replayed(letter.ref, to, skipped=False))
    finally:
        await producer.stop()
    return out


def redacted(letter: DeadLetter) -> dict[str, Any]:
    """The record as JSON: headers, and the event with every customer string replaced by its
    length (ids, enums and times are kept)."""
    event: Any = None
    cls = _message_class(letter.event_type)
    if cls is not None and letter.value is not None:
        message = cls()
        try:
            message.ParseFromString(letter.value)
            event = _redact(json_format.MessageToDict(message, preserving_proto_field_name=True))
        except DecodeError as exc:
            event = f"<not a valid {letter.event_type}: {exc}>"
    elif letter.value is not None:
        event = f"<{len(letter.value)} bytes of an unknown type>"
    return {
        "dead_letter": letter.ref,
        "key": _mask(letter.key.decode(errors="replace")) if letter.key else None,
        "headers": {k: v.decode(errors="replace") for k, v in letter.headers},
        "event": event,
    }


def _message_class(full_name: str) -> Any:
    # Imported for their side effect: each registers its event types.
    from fte.events.v1 import customer_events_pb2, delivery_events_pb2, message_events_pb2, ticket_events_pb2

    del customer_events_pb2, delivery_events_pb2, message_events_pb2, ticket_events_pb2
    try:
        return symbol_database.Default().GetSymbol(full_name)
    except KeyError:
        return None


def _redact(value: Any, field: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, field) for v in value]
    if isinstance(value, str) and not _shown(field):
        return _mask(value)
    return value


def _shown(field: str) -> bool:
    return field.endswith(("id", "_time")) or field in _SHOWN_FIELDS or field == "ticket"


def _mask(text: str) -> str:
    return f"<redacted, {len(text)} characters>"


def _print_list(letters: Sequence[DeadLetter], done: set[str]) -> None:
    for letter in letters:
        mark = "  (replayed)" if letter.ref in done else ""
        print(
            f"  {letter.partition}:{letter.offset}  {letter.header('dlq_time')}  {letter.event_type or '?'}"
            f"  from {letter.header('dlq_partition')}:{letter.header('dlq_offset')}{mark}\n    {letter.error}"
        )


async def _main(args: argparse.Namespace) -> int:
    if args.command == "list":
        done = await replayed_refs(args.bootstrap)
        for topic in args.topics or topics.ALL:
            letters = await read(args.bootstrap, topic)
            print(f"{dead_letter_topic(topic)}: {len(letters)} record(s)")
            _print_list(letters, done)
        return 0
    letters = await read(args.bootstrap, args.topic)
    if args.command == "show":
        found = [d for d in letters if (d.partition, d.offset) == (args.partition, args.offset)]
        if not found:
            print(f"no record {args.partition}:{args.offset} in {dead_letter_topic(args.topic)}", file=sys.stderr)
            return 1
        print(json.dumps(redacted(found[0]), indent=2, ensure_ascii=False))
        return 0
    if args.all:
        chosen = letters
    else:
        wanted = {tuple(int(x) for x in ref.split(":", 1)) for ref in args.records}
        chosen = [d for d in letters if (d.partition, d.offset) in wanted]
        if len(chosen) != len(wanted):
            print(f"not all of {', '.join(args.records)} are in {dead_letter_topic(args.topic)}", file=sys.stderr)
            return 1
    for r in await replay(args.bootstrap, chosen, actor=args.actor, again=args.again):
        print(
            f"{r.dead_letter}: "
            + ("replayed before; skipped (--again to send it anyway)" if r.skipped else f"sent to {r.to}")
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fte_runtime.dlq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("FTE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="dead-lettered records per topic, with their errors")
    listing.add_argument("topics", nargs="*", help="original topics (default: every topic)")
    show = sub.add_parser("show", help="one record, customer text redacted")
    show.add_argument("topic")
    show.add_argument("partition", type=int)
    show.add_argument("offset", type=int)
    again = sub.add_parser("replay", help="send records back to their topic, audited")
    again.add_argument("topic")
    again.add_argument("records", nargs="*", metavar="PARTITION:OFFSET")
    again.add_argument("--all", action="store_true", help="every record of the topic's DLQ")
    again.add_argument("--actor", required=True, help="who replays (kept in the audit topic)")
    again.add_argument("--again", action="store_true", help="also records replayed before")
    args = parser.parse_args(argv)
    if args.command == "replay" and not (args.records or args.all):
        parser.error("replay needs PARTITION:OFFSET records or --all")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
