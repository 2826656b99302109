"""`python -m fte_notifier serve | migrate | outbox`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg
from fte.common.v1 import common_pb2
from fte_runtime.db import create_pool, print_applied
from fte_runtime.enums import value_names

from fte_notifier.server import SCHEMA, migrate, serve
from fte_notifier.settings import NotifierSettings
from fte_notifier.store import CHANNEL_NAMES, Store

_STATUS = value_names(common_pb2.DeliveryStatus)


def _cell(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def show_outbox(settings: NotifierSettings, limit: int) -> None:
    """Print the newest deliveries as a small table (what local mode 'sent')."""
    pool = await create_pool(settings, SCHEMA, application_name="fte-notifier-cli")
    try:
        rows = await Store(pool).outbox_rows(limit)
    except asyncpg.UndefinedTableError:
        print("no outbox in this database yet (run `python -m fte_notifier migrate` or start the service)")
        return
    finally:
        await pool.close()
    columns = (
        ("created", 19),
        ("delivery", 36),
        ("channel", 8),
        ("status", 9),
        ("local", 5),
        ("parts", 5),
        ("recipient", 28),
        ("text", 40),
    )
    print("  ".join(name.ljust(width) for name, width in columns).rstrip())
    for d in rows:
        values = (
            d.create_time.strftime("%Y-%m-%d %H:%M:%S"),
            str(d.id),
            CHANNEL_NAMES.get(d.channel, "?"),
            _STATUS.get(d.status, "?"),
            "yes" if d.local_only else "no",
            str(d.part_count),
            d.recipient,
            d.subject + " | " + d.text_body if d.subject else d.text_body,
        )
        print("  ".join(_cell(v, w).ljust(w) for v, (_, w) in zip(values, columns, strict=True)).rstrip())
    print(f"({len(rows)} deliveries)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fte_notifier", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server, dispatcher, outcome relay and status consumer")
    sub.add_parser("migrate", help="apply database migrations and exit")
    outbox = sub.add_parser("outbox", help="print the newest deliveries")
    outbox.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    settings = NotifierSettings()
    if args.command == "serve":
        asyncio.run(serve(settings))
    elif args.command == "migrate":
        print_applied(asyncio.run(migrate(settings)))
    else:
        asyncio.run(show_outbox(settings, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
