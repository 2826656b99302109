"""`python -m fte_identity serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio

from fte_runtime.db import print_applied
from fte_runtime.logs import configure_logging

from fte_identity.server import migrate, serve
from fte_identity.settings import IdentitySettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fte_identity", description="The identity service.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve IdentityService (applies migrations first)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    args = parser.parse_args(argv)
    settings = IdentitySettings()
    if args.command == "serve":
        asyncio.run(serve(settings))
    else:
        configure_logging("identity", settings.log_level, settings.log_json)
        print_applied(asyncio.run(migrate(settings)))


if __name__ == "__main__":
    main()
