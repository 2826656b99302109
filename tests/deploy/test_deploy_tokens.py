"""The dev overlay's token files are what the services accept: every grant parses (scopes, and a
rate limit and quota where one is given) and no principal's tokens disagree on its limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from fte_runtime.auth import principal_quotas, principal_rate_limits
from fte_runtime.settings import GrpcServerSettings

SECRETS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays" / "dev" / "secrets"


@pytest.mark.parametrize("path", sorted(SECRETS.glob("*-tokens.json")), ids=lambda p: p.name)
def test_a_token_file_loads_as_the_services_load_it(path: Path) -> None:
    settings = GrpcServerSettings(auth_tokens_file=path)
    assert settings.auth_tokens
    assert all(grant.scopes for grant in settings.auth_tokens.values()), "a grant without scopes can call nothing"
    limits = principal_rate_limits(settings.auth_tokens)
    quotas = principal_quotas(settings.auth_tokens)
    for own in ("agent", "gateway", "console"):
        assert own not in limits, f"the mesh's own caller {own} is never rate limited"
        assert own not in quotas, f"the mesh's own caller {own} has no quota"


def test_internal_teams_are_rate_limited_and_held_to_a_quota_in_the_dev_overlay() -> None:
    grants = GrpcServerSettings(auth_tokens_file=SECRETS / "knowledge-tokens.json").auth_tokens
    assert principal_rate_limits(grants) == {"kb-reader": (600.0, 60)}
    quotas = {p: (q.per_day, q.per_month) for p, q in principal_quotas(grants).items()}
    assert quotas == {"kb-reader": (150_000, 3_000_000)}
