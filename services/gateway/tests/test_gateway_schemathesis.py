"""Property-based run of schemathesis against the live gateway's own OpenAPI description: whatever
it sends, the gateway never answers with a 5xx (Kafka, the database and the fakes are up)."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from fte_gateway.server import GatewayServer
from gateway_helpers import GatewayFactory  # type: ignore[import-not-found]
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.kafka

EXAMPLES_PER_OPERATION = 40


def run_schemathesis(base_url: str) -> list[str]:
    """Blocking: runs in a worker thread while the event loop keeps serving the gateway."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checked: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err would mean an invalid description

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(base_url=base_url, checks=[not_a_server_error], timeout=15)

        check()
        checked.append(operation.label)
    return checked


# schemathesis' strategies draw from the `random` module, which Hypothesis flags (a library matter).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_no_server_errors(start_gateway: GatewayFactory) -> None:
    # No rate limit, so generated submits reach validation instead of all getting 429.
    server: GatewayServer = await start_gateway(form_rate_per_minute=0)
    checked = await asyncio.to_thread(run_schemathesis, server.url)
    assert "POST /support/submit" in checked
    assert "POST /webhooks/gmail" in checked
    assert "POST /support/ticket/{reference}/reply" in checked
    assert len(checked) == 9
