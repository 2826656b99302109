"""The console's settings, all from `FTE_CONSOLE_*` environment variables."""

from __future__ import annotations

from typing import Annotated

from fte_runtime.settings import DatabaseSettings, KafkaSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


class ConsoleSettings(DatabaseSettings, KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="FTE_CONSOLE_", extra="ignore", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8090
    # AgentService (through Envoy), with the console's own token (tickets.read, tickets.write).
    agent_target: str = "127.0.0.1:9000"
    # IdentityService (through Envoy), with the same token (identity.read; identity.write to
    # merge and erase).
    identity_target: str = "127.0.0.1:9000"
    # KnowledgeService (through Envoy), with the same token (kb.read): the dashboard's gaps.
    knowledge_target: str = "127.0.0.1:9000"
    service_token: SecretStr = SecretStr("")
    agent_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    # Cookies are sent over HTTPS only; off only for a local run on plain http://127.0.0.1.
    cookie_secure: bool = True
    session_hours: Annotated[float, Field(gt=0, le=24 * 7)] = 12.0
    # Wrong passwords in a row before an account is locked, and for how long.
    login_max_failures: Annotated[int, Field(ge=1, le=100)] = 10
    lockout_minutes: Annotated[float, Field(gt=0)] = 15.0
    # Sign-in attempts per client address per minute (the lockout protects each account).
    login_rate_per_minute: Annotated[int, Field(ge=1)] = 30
    queue_page_size: Annotated[int, Field(ge=1, le=100)] = 50
    # The live queue: each process reads `fte.tickets.escalated` in a group of its own, named
    # from this prefix and a random suffix.
    live_group_prefix: str = "fte-console-live"
    # Live delivery status on ticket pages: each process reads `fte.deliveries.outcomes` in a group
    # of its own, named from this prefix and a random suffix.
    delivery_group_prefix: str = "fte-console-delivery"
    # Seconds between keep-alive comments on an open live stream (the session is checked then).
    live_heartbeat_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0
    # The trace page's source: a Jaeger query API (`/api/traces`), e.g. http://jaeger-query:16686.
    # Empty: tracing is off and the page says so.
    traces_url: str = ""
    # OIDC sign-in (authorization code with PKCE), on when an issuer is set. Staff are matched to
    # local accounts by the ID token's verified `email` claim (`users add NAME --email ADDRESS`).
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    # Where the provider sends the browser back; empty: this server's /login/oidc/callback as the
    # request reached it (set it behind a proxy that changes the host or scheme).
    oidc_redirect_url: str = ""
    # An email no account has: refused, or (true) a new account with the `agent` role.
    oidc_auto_provision: bool = False
    # The username and password form; may be off only when OIDC is configured.
    password_sign_in: bool = True

    @model_validator(mode="after")
    def _oidc_complete(self) -> ConsoleSettings:
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_client_secret.get_secret_value()):
            raise ValueError("FTE_CONSOLE_OIDC_ISSUER needs OIDC_CLIENT_ID and OIDC_CLIENT_SECRET too")
        if not self.password_sign_in and not self.oidc_issuer:
            raise ValueError("FTE_CONSOLE_PASSWORD_SIGN_IN=false needs OIDC sign-in (FTE_CONSOLE_OIDC_ISSUER)")
        return self
