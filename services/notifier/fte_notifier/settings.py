"""The notifier's settings, read once at start-up from `FTE_NOTIFIER_*` variables or mounted files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fte_runtime.settings import DatabaseSettings, GrpcServerSettings, KafkaSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


def _from_file(value: SecretStr | None, path: Path | None) -> SecretStr | None:
    """A secret given inline wins; otherwise the mounted file's content, stripped."""
    if value is not None and value.get_secret_value():
        return value
    if path is not None:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    return value


class NotifierSettings(GrpcServerSettings, DatabaseSettings, KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="FTE_NOTIFIER_", extra="ignore", frozen=True)

    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50053

    # Kafka: consume delivery statuses, relay ReplyDelivered / DeliveryFailed. Off = outbox only.
    kafka_enabled: bool = True
    status_consumer_group: str = "fte-notifier"

    # Dispatcher.
    dispatch_batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    dispatch_concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    dispatch_poll_seconds: Annotated[float, Field(gt=0)] = 0.5
    # A claimed delivery is invisible to other dispatchers until its lease runs out; the lease
    # is renewed before every provider call, so a crashed dispatcher's work resumes after it.
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_attempts: Annotated[int, Field(ge=1, le=5)] = 5
    retry_base_seconds: Annotated[float, Field(gt=0)] = 1.0
    retry_max_seconds: Annotated[float, Field(gt=0)] = 60.0
    provider_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Outbound provider calls run on threads (the SDKs are synchronous).
    provider_threads: Annotated[int, Field(ge=1, le=128)] = 16

    # Gmail. Credentials: an OAuth access token, or authorized-user JSON (with a refresh token).
    gmail_access_token: SecretStr | None = None
    gmail_access_token_file: Path | None = None
    gmail_credentials_json: SecretStr | None = None
    gmail_credentials_json_file: Path | None = None
    gmail_sender: str = "support@example.com"
    gmail_api_endpoint: str | None = None  # a local fake's base URL; None = Google
    message_id_domain: str = "notifier.fte.local"

    # Twilio WhatsApp.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_auth_token_file: Path | None = None
    twilio_api_base_url: str | None = None  # a local fake's base URL; None = Twilio
    whatsapp_from: str = "whatsapp:+14155238886"
    # Content SIDs of approved templates that may be sent outside the 24-hour window.
    whatsapp_approved_templates: frozenset[str] = frozenset()
    # The gateway's public base URL; status callbacks go to <base>/webhooks/whatsapp/status.
    gateway_base_url: str = "http://127.0.0.1:8080"

    @model_validator(mode="after")
    def _load_secret_files(self) -> NotifierSettings:
        for name, path_name in (
            ("gmail_access_token", "gmail_access_token_file"),
            ("gmail_credentials_json", "gmail_credentials_json_file"),
            ("twilio_auth_token", "twilio_auth_token_file"),
        ):
            object.__setattr__(self, name, _from_file(getattr(self, name), getattr(self, path_name)))
        return self

    @property
    def gmail_configured(self) -> bool:
        # An explicit endpoint without credentials is a local fake: it is called anonymously.
        return bool(self.gmail_access_token or self.gmail_credentials_json or self.gmail_api_endpoint)

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def status_callback_url(self) -> str:
        return self.gateway_base_url.rstrip("/") + "/webhooks/whatsapp/status"
