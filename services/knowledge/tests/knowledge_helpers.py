"""Small helpers shared by the knowledge tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from fte.knowledge.v1 import knowledge_pb2, knowledge_service_pb2_grpc
from fte_knowledge.server import Knowledge
from fte_runtime.errors import error_info, field_violations

Stub = knowledge_service_pb2_grpc.KnowledgeServiceStub
# A stub for the service as a given principal ("staff", "kb-reader", "gateway", ...).
Client = Callable[[str], Stub]
# Starts a knowledge service; keyword arguments override its settings.
StartKnowledge = Callable[..., Awaitable[Knowledge]]


def article(slug: str, title: str = "", body: str = "", **fields: object) -> knowledge_pb2.Article:
    return knowledge_pb2.Article(
        slug=slug,
        title=title or slug.replace("-", " ").capitalize(),
        body=body or f"# {title or slug}\n\nSome text about {slug.replace('-', ' ')}.\n",
        **fields,  # type: ignore[arg-type]
    )


def failure(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str]:
    """(status code, ErrorInfo reason, message) of a failed call."""
    info = error_info(err)
    return err.code(), info.reason if info else "", err.details() or ""


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    """Field paths of the BadRequest detail."""
    return [path for path, _ in field_violations(err)]


async def run_cli(dsn: str, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={"FTE_KNOWLEDGE_DATABASE_URL": dsn, "FTE_KNOWLEDGE_LOG_JSON": "false"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
