"""python -m fte_gateway serve | migrate | gmail-watch | gmail-sync"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from fte_runtime.context import new_correlation_id
from fte_runtime.db import create_pool, migrate, print_applied
from fte_runtime.logs import configure_logging

from fte_gateway.settings import GatewaySettings
from fte_gateway.store import SCHEMA, GatewayStore


async def _gmail(settings: GatewaySettings, command: str) -> None:
    from fte_gateway.gmail import GmailApi, GmailSync
    from fte_gateway.publisher import Publisher

    await migrate(settings, SCHEMA, "fte_gateway")
    pool = await create_pool(settings, SCHEMA, application_name="fte-gateway-cli")
    publisher = Publisher(settings)
    try:
        sync = GmailSync(settings, GatewayStore(pool), publisher, GmailApi(settings))
        if command == "gmail-watch":
            reply = await sync.renew_watch()
            print(json.dumps({"historyId": reply.get("historyId"), "expiration": reply.get("expiration")}))
        else:
            await publisher.start()
            async with asyncio.timeout(30):
                await publisher.connected()
            result = await sync.sync(new_correlation_id())
            print(json.dumps({"published": result.published, "skipped": result.skipped, "fallback": result.fallback}))
    finally:
        await publisher.stop()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fte_gateway", description="The fte HTTP gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve HTTP (uvicorn)")
    sub.add_parser("migrate", help="apply the gateway schema's migrations")
    sub.add_parser("gmail-watch", help="start or renew the Gmail push watch (run daily)")
    sub.add_parser("gmail-sync", help="sync the Gmail history once (what the periodic sweep does)")
    args = parser.parse_args(argv)
    settings = GatewaySettings()
    if args.command == "serve":
        from fte_gateway.server import serve

        serve(settings)
    else:
        configure_logging("gateway", settings.log_level, settings.log_json)
        if args.command == "migrate":
            print_applied(asyncio.run(migrate(settings, SCHEMA, "fte_gateway")))
        else:
            asyncio.run(_gmail(settings, args.command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
