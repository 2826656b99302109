"""`python -m fte_agent serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio

from fte_agent.settings import AgentSettings


def main() -> None:
    parser = argparse.ArgumentParser(prog="fte_agent", description="The fte agent: worker and AgentService.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the Kafka worker and the gRPC AgentService until SIGTERM")
    sub.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args()
    settings = AgentSettings()
    if args.command == "migrate":
        from fte_agent.server import migrate

        for name in asyncio.run(migrate(settings)):
            print("applied", name)
        return
    from fte_agent.server import serve

    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
