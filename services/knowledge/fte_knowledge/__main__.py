"""`python -m fte_knowledge serve | migrate | import PATH | reembed`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from fte_knowledge.settings import KnowledgeSettings


async def _reembed(settings: KnowledgeSettings) -> int:
    from fte_knowledge.reembed import reembed_pending
    from fte_knowledge.server import close_knowledge_base, open_knowledge_base

    kb = await open_knowledge_base(settings, "fte-knowledge-reembed")
    try:
        return await reembed_pending(kb)
    finally:
        await close_knowledge_base(kb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fte_knowledge", description="KnowledgeService")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC server (applies migrations first)")
    sub.add_parser("migrate", help="apply the schema migrations and exit")
    imp = sub.add_parser("import", help="import a markdown folder or a JSONL file (idempotent by slug)")
    imp.add_argument("path", type=Path)
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("reembed", help="embed every chunk lacking a vector for the configured model, then exit")
    args = parser.parse_args(argv)
    settings = KnowledgeSettings()

    if args.command == "serve":
        from fte_knowledge.server import serve

        asyncio.run(serve(settings))
        return 0
    if args.command == "migrate":
        from fte_runtime.db import print_applied

        from fte_knowledge.server import migrate

        print_applied(asyncio.run(migrate(settings)))
        return 0
    if args.command == "import":
        from fte_knowledge.importer import import_path

        if not args.path.exists():
            print(f"{args.path}: no such file or folder", file=sys.stderr)
            return 2
        counts, rejected = asyncio.run(import_path(settings, args.path, progress=not args.no_progress))
        print(
            f"created {counts['created']}, updated {counts['updated']}, unchanged {counts['unchanged']}, "
            f"rejected {rejected}"
        )
        return 1 if rejected else 0
    if args.command == "reembed":
        print(f"re-embedded {asyncio.run(_reembed(settings))} chunks")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
