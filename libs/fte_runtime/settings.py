"""Settings shared by every service. Each service declares one subclass with its own env prefix.

Nothing else in the code base reads the environment: a service builds its settings once at
start-up and passes them down, so a bad value fails the start, not a request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RateLimit(BaseModel):
    """How fast one principal may call a service: a token bucket refilled at
    `requests_per_minute` that holds at most `burst` calls."""

    requests_per_minute: float = Field(gt=0)
    burst: int = Field(ge=1)


class Quota(BaseModel):
    """How many calls one principal may make to a service per UTC calendar day and/or month,
    counted across the service's replicas (fte_runtime.quota). At least one must be given."""

    per_day: int | None = Field(default=None, ge=1)
    per_month: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _some_window(self) -> Quota:
        if self.per_day is None and self.per_month is None:
            raise ValueError("a quota needs per_day, per_month or both")
        return self


class TokenGrant(BaseModel):
    """What one bearer token may do."""

    principal: str = Field(min_length=1)
    scopes: list[str] = Field(default_factory=list)
    # None: the principal is not limited. Every token of one principal shares its bucket.
    rate_limit: RateLimit | None = None
    # None: no quota. Every token of one principal shares its counts.
    quota: Quota | None = None


class BaseServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set `model_config` with their env prefix."""

    model_config = SettingsConfigDict(env_prefix="FTE_", extra="ignore", frozen=True)

    log_level: str = "INFO"
    # JSON logs for machines; plain lines are easier to read in a terminal.
    log_json: bool = True


class AuthTokensSettings(BaseServiceSettings):
    """A service that authenticates bearer tokens against the mesh's token configuration."""

    # Bearer token -> grant, as JSON; or a mounted file with that JSON (auth_tokens_file).
    auth_tokens: dict[str, TokenGrant] = Field(default_factory=dict)
    auth_tokens_file: Path | None = None

    @model_validator(mode="after")
    def _load_tokens_file(self) -> AuthTokensSettings:
        if self.auth_tokens_file is not None:
            data: dict[str, Any] = json.loads(self.auth_tokens_file.read_text())
            merged = dict(self.auth_tokens)
            merged.update({k: TokenGrant.model_validate(v) for k, v in data.items()})
            object.__setattr__(self, "auth_tokens", merged)
        return self


class GrpcServerSettings(AuthTokensSettings):
    """A service that serves gRPC."""

    grpc_host: str = "127.0.0.1"
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50051
    # 0 disables the Prometheus endpoint.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    # Seconds in-flight calls get to finish on SIGTERM.
    shutdown_grace_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Timeout of a downstream call when the caller set no deadline.
    default_deadline_seconds: Annotated[float, Field(gt=0)] = 5.0
    max_concurrent_rpcs: Annotated[int, Field(ge=1)] = 256
    # Quota counts are kept in memory and added to the database's every this many seconds, or
    # sooner once this many calls are waiting: the bound on how far replicas can overshoot a quota.
    quota_flush_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    quota_flush_calls: Annotated[int, Field(ge=1)] = 100


class DatabaseSettings(BaseServiceSettings):
    """A service that owns a PostgreSQL schema."""

    database_url: SecretStr = SecretStr("postgresql://fte@127.0.0.1:55432/fte")
    database_pool_min: Annotated[int, Field(ge=0)] = 1
    database_pool_max: Annotated[int, Field(ge=1)] = 10


class KafkaSettings(BaseServiceSettings):
    """A service that produces or consumes events."""

    kafka_bootstrap: str = "127.0.0.1:19092"
    # Idempotent producers need a broker that supports them (Apache Kafka); the embedded
    # broker does not, so it is off there.
    kafka_idempotence: bool = False
    kafka_client_id: str = "fte"
    kafka_session_timeout_ms: Annotated[int, Field(ge=1000)] = 10000
    kafka_heartbeat_interval_ms: Annotated[int, Field(ge=100)] = 3000


class TracingSettings(BaseSettings):
    """OpenTelemetry traces (fte_runtime.tracing), from the standard `OTEL_*` variables every
    OpenTelemetry SDK reads, shared by every service. No endpoint: tracing is off (no exporter,
    no spans)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore", frozen=True)

    # The OTLP/gRPC collector, e.g. http://otel-collector:4317 (http: plaintext, https: TLS).
    exporter_otlp_endpoint: str = ""
    # A traces-only endpoint, taking precedence over exporter_otlp_endpoint.
    exporter_otlp_traces_endpoint: str = ""
    # Only OTLP over gRPC is shipped.
    exporter_otlp_protocol: Literal["grpc"] = "grpc"
    # Headers sent with every export, `key=value,key2=value2` (a collector's API key, say).
    exporter_otlp_headers: SecretStr = SecretStr("")
    # Empty: `fte-<service>`.
    service_name: str = ""
    # More resource attributes, `key=value,...` (deployment.environment=prod, say).
    resource_attributes: str = ""
    # Share of new traces kept (a parent's decision is always followed).
    traces_sampler_arg: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    # Milliseconds between two exports of the buffered spans.
    bsp_schedule_delay: Annotated[int, Field(ge=1)] = 5000
    # True: no tracing whatever the endpoint says.
    sdk_disabled: bool = False

    @property
    def endpoint(self) -> str:
        return "" if self.sdk_disabled else (self.exporter_otlp_traces_endpoint or self.exporter_otlp_endpoint)
