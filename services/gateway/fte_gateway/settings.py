"""The gateway's settings, all from `FTE_GATEWAY_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fte_runtime.settings import DatabaseSettings, KafkaSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
# Only for local runs against the fakes; production sets the real token from a secret.
DEV_TWILIO_AUTH_TOKEN = "local-dev-twilio-auth-token"  # noqa: S105 - a documented local default


class GatewaySettings(KafkaSettings, DatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTE_GATEWAY_", extra="ignore", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # Prometheus /metrics on a port of its own, never the public edge's (0: off).
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    # The URL providers call us at (Twilio signs it); empty: taken from the request.
    public_base_url: str = ""
    # Peers whose X-Forwarded-* headers are believed (IPs or CIDRs of the load balancer).
    trusted_proxies: list[str] = Field(default_factory=list)

    # AgentService (through Envoy) for the ticket status page.
    agent_target: str = "127.0.0.1:9000"
    service_token: SecretStr = SecretStr("")
    agent_timeout_seconds: Annotated[float, Field(gt=0)] = 3.0

    # Kafka: how long a request waits for acks=all before answering 503.
    publish_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0

    # Twilio WhatsApp.
    twilio_auth_token: SecretStr = SecretStr(DEV_TWILIO_AUTH_TOKEN)

    # Gmail push (Pub/Sub OIDC) and the Gmail API.
    gmail_enabled: bool = True
    gmail_push_audience: str = ""
    gmail_push_service_account: str = ""
    google_certs_url: str = GOOGLE_CERTS_URL
    # Empty: Google's endpoint. Local runs point it at the fake Gmail server.
    gmail_api_endpoint: str = ""
    # OAuth authorized-user JSON of the support mailbox (refresh token); none: anonymous (fakes only).
    gmail_credentials_file: Path | None = None
    gmail_user: str = "me"
    # The support mailbox address; mail from it is the system's own and is skipped.
    gmail_address: str = "support@example.com"
    gmail_watch_topic: str = "projects/fte-local/topics/gmail-push"
    gmail_watch_label_ids: list[str] = Field(default_factory=lambda: ["INBOX"])
    # A stale historyId falls back to at most this many recent inbox messages.
    gmail_fallback_max_messages: Annotated[int, Field(ge=1, le=500)] = 50
    # Periodic history sweep for dropped notifications; 0 disables.
    gmail_sweep_seconds: Annotated[float, Field(ge=0)] = 60.0

    # Web form.
    cors_origins: list[str] = Field(default_factory=list)
    # Who may embed the page in an iframe (CSP frame-ancestors).
    frame_ancestors: str = "*"
    form_rate_per_minute: Annotated[float, Field(ge=0)] = 10.0  # 0 disables the limit
    form_rate_burst: Annotated[int, Field(ge=1)] = 5

    max_body_bytes: Annotated[int, Field(ge=1024)] = 128 * 1024

    def public_url(self, path: str) -> str | None:
        return self.public_base_url.rstrip("/") + path if self.public_base_url else None
