"""python -m fte_mcp serve | stdio

`serve` answers MCP over streamable HTTP at /mcp (bearer tokens); `stdio` speaks MCP on standard
input and output for one local assistant, acting with the token in FTE_MCP_TOKEN. Logs (and the
audit lines) go to standard error in both.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from fte_runtime.logs import configure_logging

from fte_mcp.settings import McpSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fte_mcp", description="The MCP server of the support mesh.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve MCP over streamable HTTP (uvicorn)")
    sub.add_parser("stdio", help="serve one local assistant over stdin/stdout, with FTE_MCP_TOKEN")
    args = parser.parse_args(argv)
    settings = McpSettings()
    if args.command == "serve":
        from fte_mcp.http import serve

        serve(settings)
        return 0
    from fte_mcp.app import StdioRefused, serve_stdio, stdio_caller

    configure_logging("mcp", settings.log_level, settings.log_json)
    try:
        caller = stdio_caller(settings)
    except StdioRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_stdio(settings, caller))
    return 0


if __name__ == "__main__":
    sys.exit(main())
