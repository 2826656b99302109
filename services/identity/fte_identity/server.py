"""Builds the identity gRPC server and runs it with its outbox relay."""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fte.identity.v1 import identity_service_pb2_grpc
from fte_runtime.db import apply_migrations, create_pool
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration, run_until_signalled
from fte_runtime.logs import configure_logging

from fte_identity.outbox import OutboxRelay
from fte_identity.servicer import METHOD_SCOPES, IdentityServicer, VerificationPolicy
from fte_identity.settings import IdentitySettings
from fte_identity.store import Store

log = logging.getLogger("fte.identity")

SCHEMA = "identity"
DOMAIN = "identity.fte"
SERVICE_NAME = "fte.identity.v1.IdentityService"


def migrations() -> Any:
    return importlib.resources.files("fte_identity") / "migrations"


async def migrate(settings: IdentitySettings) -> list[str]:
    return await apply_migrations(settings.database_url.get_secret_value(), SCHEMA, migrations())


@dataclass
class IdentityApp:
    server: GrpcServer
    relay: OutboxRelay
    pool: Any


async def build(settings: IdentitySettings) -> IdentityApp:
    """Migrate, open the pool and assemble the server and relay (nothing started yet)."""
    await migrate(settings)
    pool = await create_pool(settings, SCHEMA, application_name="fte-identity", reset_on_release=False)
    relay = OutboxRelay(
        pool,
        settings,
        source=DOMAIN,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
    )
    servicer = IdentityServicer(
        Store(pool),
        default_region=settings.default_region,
        verification=VerificationPolicy(
            ttl=timedelta(seconds=settings.verification_code_ttl_seconds),
            max_attempts=settings.verification_max_attempts,
            max_codes_per_hour=settings.verification_max_codes_per_hour,
            key=settings.verification_key.get_secret_value().encode(),
        ),
        on_event=relay.wake,
    )
    server = GrpcServer(
        settings,
        domain=DOMAIN,
        services=[
            ServiceRegistration(
                SERVICE_NAME, servicer, identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, METHOD_SCOPES
            )
        ],
    )
    return IdentityApp(server, relay, pool)


async def serve(settings: IdentitySettings) -> None:
    configure_logging("identity", settings.log_level, settings.log_json)
    app = await build(settings)

    async def close_pool() -> None:
        await app.pool.close()

    await run_until_signalled(app.server, cleanups=[app.relay.close, close_pool], background=[app.relay.run])
