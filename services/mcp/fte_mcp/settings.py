"""The MCP server's settings, all from `FTE_MCP_*` environment variables."""

from __future__ import annotations

from typing import Annotated

from fte_runtime.settings import AuthTokensSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class McpSettings(AuthTokensSettings):
    """`AUTH_TOKENS` / `AUTH_TOKENS_FILE` are the mesh's own token configuration: a bearer the
    mesh would refuse is refused here too, and each call goes to the mesh with the caller's token."""

    model_config = SettingsConfigDict(env_prefix="FTE_MCP_", extra="ignore", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8095
    # 0 disables the Prometheus endpoint.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    # The mesh, through Envoy.
    knowledge_target: str = "127.0.0.1:9000"
    identity_target: str = "127.0.0.1:9000"
    agent_target: str = "127.0.0.1:9000"
    # Timeout of each call to the mesh.
    mesh_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    # `python -m fte_mcp stdio` only: the bearer token the local assistant acts with.
    token: SecretStr = SecretStr("")
    # Host headers accepted besides the loopback ones (DNS-rebinding protection), e.g. the
    # Service's name in a cluster; with none and a non-loopback HTTP_HOST the check is off.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Largest request body accepted, in bytes.
    max_request_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
