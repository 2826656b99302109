"""Helpers shared by the identity tests."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from fte.common.v1 import common_pb2
from fte.identity.v1 import identity_pb2, identity_service_pb2, identity_service_pb2_grpc
from fte_identity.server import IdentityApp
from fte_runtime.errors import error_info
from fte_runtime.grpc_client import connect

Kind = identity_pb2.IdentifierKind
Channel = common_pb2.Channel
READER_TOKEN = "test-token-identity-reader"


@dataclass
class Identity:
    app: IdentityApp
    dsn: str
    target: str
    stub: identity_service_pb2_grpc.IdentityServiceAsyncStub
    channels: list[grpc.aio.Channel]

    def client(self, token: str | None) -> identity_service_pb2_grpc.IdentityServiceAsyncStub:
        channel = connect(self.target, token=token)
        self.channels.append(channel)
        return identity_service_pb2_grpc.IdentityServiceStub(channel)


StartIdentity = Callable[..., Awaitable[Identity]]


def ident(kind: int, value: str) -> identity_service_pb2.IdentifierInput:
    return identity_service_pb2.IdentifierInput(kind=kind, value=value)  # type: ignore[arg-type]


def email(value: str) -> identity_service_pb2.IdentifierInput:
    return ident(Kind.IDENTIFIER_KIND_EMAIL, value)


def resolve_request(
    channel: int,
    *identifiers: identity_service_pb2.IdentifierInput,
    name: str = "",
    authenticated: bool | None = None,
) -> identity_service_pb2.ResolveCustomerRequest:
    """An email is authenticated unless told otherwise (what the gateway sees for ordinary mail)."""
    return identity_service_pb2.ResolveCustomerRequest(
        channel=channel,  # type: ignore[arg-type]
        identifiers=identifiers,
        display_name=name,
        sender_authenticated=(channel == Channel.CHANNEL_EMAIL) if authenticated is None else authenticated,
    )


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail with `code` and the ErrorInfo `reason`."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() == code, err.details()
    detail = error_info(err)
    assert detail is not None
    assert detail.reason == reason, err.details()
    return err


async def count_rows(dsn: str, sql: str, *args: Any) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": "identity"})
    try:
        value: int = await conn.fetchval(sql, *args)
        return value
    finally:
        with contextlib.suppress(Exception):
            await conn.close()
