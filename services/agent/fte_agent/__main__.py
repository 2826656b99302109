"""`python -m fte_agent serve | migrate | train`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from fte_agent.settings import AgentSettings


def main() -> None:
    parser = argparse.ArgumentParser(prog="fte_agent", description="The fte agent: worker and AgentService.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the Kafka worker and the gRPC AgentService until SIGTERM")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    train = sub.add_parser("train", help="embed the reader's corpus and fit its stages into the cache folder, and exit")
    train.add_argument("--cache-dir", type=Path, help="default: FTE_AGENT_READER_CACHE_DIR")
    args = parser.parse_args()
    settings = AgentSettings()
    if args.command == "train":
        from fte_agent import reader

        cache_dir = args.cache_dir or settings.reader_cache_dir
        if cache_dir is None:
            parser.error("train needs --cache-dir or FTE_AGENT_READER_CACHE_DIR")
        reader.trained(cache_dir)
        print("reader corpus vectors and fitted stages cached in", cache_dir)
        return
    if args.command == "migrate":
        from fte_runtime.db import print_applied

        from fte_agent.server import migrate

        print_applied(asyncio.run(migrate(settings)))
        return
    from fte_agent.server import serve

    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
