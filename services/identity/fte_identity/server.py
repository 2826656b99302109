"""The identity service: its pool, IdentityService and the outbox relay."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from fte.identity.v1 import identity_service_pb2_grpc
from fte_runtime import db, envelope, service
from fte_runtime.db import create_pool
from fte_runtime.grpc_server import GrpcServer

from fte_identity.customers import Customers
from fte_identity.domain import VerificationPolicy
from fte_identity.outbox import OutboxRelay
from fte_identity.servicer import METHOD_SCOPES, IdentityServicer
from fte_identity.settings import IdentitySettings
from fte_identity.store import Store

log = logging.getLogger("fte.identity")

SCHEMA = "identity"
DOMAIN = envelope.service_source("identity")
SERVICE_NAME = "fte.identity.v1.IdentityService"


async def migrate(settings: IdentitySettings) -> list[str]:
    return await db.migrate(settings, SCHEMA, "fte_identity")


class Identity(service.Service[IdentitySettings]):
    name = "identity"
    domain = DOMAIN

    async def open(self) -> None:
        s = self.settings
        await migrate(s)
        self.pool: Any = await self.resource(
            create_pool(s, SCHEMA, application_name="fte-identity", reset_on_release=False), lambda p: p.close()
        )
        self.keep_quotas(self.pool)
        self.relay = OutboxRelay(
            self.pool, s, source=DOMAIN, batch_size=s.outbox_batch_size, poll_seconds=s.outbox_poll_seconds
        )
        self.on_close(self.relay.close)
        verification = VerificationPolicy(
            ttl=timedelta(seconds=s.verification_code_ttl_seconds),
            max_attempts=s.verification_max_attempts,
            max_codes_per_hour=s.verification_max_codes_per_hour,
            key=s.verification_key.get_secret_value().encode(),
        )
        servicer = IdentityServicer(
            Customers(Store(self.pool), verification), default_region=s.default_region, on_event=self.relay.wake
        )
        self.register(
            SERVICE_NAME, servicer, identity_service_pb2_grpc.add_IdentityServiceServicer_to_server, METHOD_SCOPES
        )
        self.background("outbox relay", self.relay.run)

    @property
    def server(self) -> GrpcServer:
        return self.grpc


# Tests and benches that serve the API without the relay: `build()`, then `server.start()`.
IdentityApp = Identity


async def build(settings: IdentitySettings) -> Identity:
    """The service opened and its server built, nothing started yet."""
    identity = Identity(settings)
    await identity.setup()
    return identity


async def serve(settings: IdentitySettings) -> None:
    await Identity(settings).serve()
