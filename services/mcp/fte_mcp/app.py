"""The two transports: streamable HTTP (a Starlette app, bearer tokens) and stdio (one token).

Bearer tokens are the mesh's own: the server checks each against the mesh's token configuration
(`AUTH_TOKENS` / `AUTH_TOKENS_FILE`, the same file the gRPC services read), answers 401 to a
missing or unknown one, and calls the mesh with that same token, so the mesh's scopes decide
what each call may do; the server holds no token of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from fte.agent.v1 import agent_service_pb2_grpc
from fte.identity.v1 import identity_service_pb2_grpc
from fte.knowledge.v1 import knowledge_service_pb2_grpc
from fte_runtime.auth import Authenticator
from fte_runtime.errors import Unauthenticated
from fte_runtime.grpc_client import connect
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fte_mcp.server import create_server
from fte_mcp.settings import McpSettings
from fte_mcp.tools import Caller, Mesh

log = logging.getLogger("fte.mcp")

MCP_PATH = "/mcp"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class MeshTokenVerifier:
    """The SDK's `TokenVerifier` over the mesh's token configuration."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = self._authenticator.authenticate(f"Bearer {token}")
        except Unauthenticated:
            return None
        return AccessToken(token=token, client_id=principal.name, scopes=sorted(principal.scopes))


@dataclass
class MeshChannels:
    channels: list[grpc.aio.Channel]
    mesh: Mesh

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def open_mesh(settings: McpSettings) -> MeshChannels:
    """Channels to the mesh with no token of their own: every call carries its caller's."""
    timeout = settings.mesh_timeout_seconds
    targets = (settings.knowledge_target, settings.identity_target, settings.agent_target)
    by_target = {t: connect(t, default_timeout=timeout) for t in dict.fromkeys(targets)}
    mesh = Mesh(
        knowledge=knowledge_service_pb2_grpc.KnowledgeServiceStub(by_target[settings.knowledge_target]),
        identity=identity_service_pb2_grpc.IdentityServiceStub(by_target[settings.identity_target]),
        agent=agent_service_pb2_grpc.AgentServiceStub(by_target[settings.agent_target]),
    )
    return MeshChannels(list(by_target.values()), mesh)


def transport_security(settings: McpSettings) -> TransportSecuritySettings:
    """DNS-rebinding protection (Host and Origin checks) for a loopback server or named hosts."""
    hosts = [f"{h}:*" if h != "::1" else "[::1]:*" for h in LOOPBACK_HOSTS] + list(settings.allowed_hosts)
    origins = [f"http://{h}:*" if h != "::1" else "http://[::1]:*" for h in LOOPBACK_HOSTS]
    enabled = settings.http_host in LOOPBACK_HOSTS or bool(settings.allowed_hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=enabled, allowed_hosts=hosts, allowed_origins=origins
    )


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    if getattr(request.app.state, "session_manager", None) is None:
        return PlainTextResponse("starting", status_code=503)
    return PlainTextResponse("ready")


async def _mcp(scope: Scope, receive: Receive, send: Send) -> None:
    manager: StreamableHTTPSessionManager = scope["app"].state.session_manager
    await manager.handle_request(scope, receive, send)


def create_app(settings: McpSettings) -> Starlette:
    authenticator = Authenticator(settings.auth_tokens)
    if not settings.auth_tokens:
        log.warning("no AUTH_TOKENS configured: every MCP request will be refused with 401")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        mesh = open_mesh(settings)
        # Stateless, JSON answers: any replica serves any request, and nothing is kept between
        # requests but what the caller's token says.
        manager = StreamableHTTPSessionManager(
            app=create_server(mesh.mesh),
            json_response=True,
            stateless=True,
            security_settings=transport_security(settings),
            max_request_body_size=settings.max_request_bytes,
        )
        try:
            async with manager.run():
                app.state.session_manager = manager
                yield
        finally:
            app.state.session_manager = None
            await mesh.close()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route(MCP_PATH, RequireAuthMiddleware(_mcp, required_scopes=[]), methods=["GET", "POST", "DELETE"]),
    ]
    middleware = [Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(MeshTokenVerifier(authenticator)))]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


class StdioRefused(Exception):
    """The stdio server cannot start: no token, or one the mesh's token configuration lacks."""


def stdio_caller(settings: McpSettings) -> Caller:
    token = settings.token.get_secret_value().strip()
    if not token:
        raise StdioRefused("set FTE_MCP_TOKEN to the bearer token the assistant acts with")
    try:
        principal = Authenticator(settings.auth_tokens).authenticate(f"Bearer {token}")
    except Unauthenticated as exc:
        raise StdioRefused(
            f"FTE_MCP_TOKEN is not in the token configuration (FTE_MCP_AUTH_TOKENS[_FILE]): {exc}"
        ) from exc
    return Caller(principal.name, principal.scopes, token)


async def serve_stdio(settings: McpSettings, caller: Caller) -> None:
    mesh = open_mesh(settings)
    try:
        server = create_server(mesh.mesh, stdio_caller=caller)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        await mesh.close()
