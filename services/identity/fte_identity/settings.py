"""The identity service's settings, read once at start-up from `FTE_IDENTITY_*`."""

from __future__ import annotations

from typing import Annotated

import phonenumbers
from fte_runtime.settings import DatabaseSettings, GrpcServerSettings, KafkaSettings
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict


class IdentitySettings(GrpcServerSettings, DatabaseSettings, KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="FTE_IDENTITY_", extra="ignore", frozen=True)

    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 50052
    # Region assumed for phone numbers given without a country code (ISO 3166 alpha-2).
    default_region: str = "US"
    verification_code_ttl_seconds: Annotated[float, Field(gt=0)] = 600.0
    verification_max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    # New codes per identifier per hour: with the attempts per code, this bounds guessing.
    verification_max_codes_per_hour: Annotated[int, Field(ge=1)] = 5
    # Key of the HMAC over one-time codes, so a copy of the table alone cannot recover them.
    verification_key: SecretStr = SecretStr("")
    # How often the outbox relay looks for events when nothing woke it.
    outbox_poll_seconds: Annotated[float, Field(gt=0)] = 1.0
    outbox_batch_size: Annotated[int, Field(ge=1, le=1000)] = 100

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}")
        return region
