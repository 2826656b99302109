"""Small helpers shared by the knowledge tests."""

from __future__ import annotations

import grpc
from fte.knowledge.v1 import knowledge_pb2
from fte_runtime.errors import error_info
from grpc_status import rpc_status


def article(slug: str, title: str = "", body: str = "", **fields: object) -> knowledge_pb2.Article:
    return knowledge_pb2.Article(
        slug=slug,
        title=title or slug.replace("-", " ").capitalize(),
        body=body or f"# {title or slug}\n\nSome text about {slug.replace('-', ' ')}.\n",
        **fields,  # type: ignore[arg-type]
    )


def failure(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str]:
    """(status code, ErrorInfo reason, message) of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    info = error_info(status) if status is not None else None
    return err.code(), info.reason if info else "", err.details() or ""


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    """Field paths of the BadRequest detail."""
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields
