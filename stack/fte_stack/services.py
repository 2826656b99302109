"""How the stack starts each service: its module, ports and environment.

Each service reads only its own `FTE_<SERVICE>_*` variables (its pydantic-settings class). A
service whose package is not installed is skipped, so the stack runs whatever exists.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Scopes of each principal the stack mints a token for.
GRANTS: Mapping[str, tuple[str, ...]] = {
    # The agent worker calling knowledge (search, and record knowledge gaps: never write articles),
    # identity and the notifier.
    "agent": ("kb.read", "kb.gaps.write", "identity.read", "identity.write", "notifier.send", "notifier.read"),
    # The gateway reading tickets for the web-form status page.
    "gateway": ("tickets.read",),
    # Staff tools and the demo: everything.
    "staff": (
        "kb.read",
        "kb.write",
        "kb.gaps.write",
        "identity.read",
        "identity.write",
        "notifier.read",
        "notifier.send",
        "tickets.read",
        "tickets.write",
    ),
    # The staff console: reads and works tickets, reads customers, and (for its admins) merges and
    # erases them, and reads the knowledge gaps for its dashboard (its staff members are its own accounts).
    "console": ("tickets.read", "tickets.write", "identity.read", "identity.write", "kb.read"),
    # An internal team that only searches the knowledge base.
    "kb-reader": ("kb.read",),
    # An internal team's script that reads articles, customers and tickets, held to a low rate.
    "team-script": ("kb.read", "identity.read", "tickets.read"),
    # An internal team's AI assistant (through the MCP server) that reads the knowledge base,
    # customers and tickets, and never writes.
    "assistant-reader": ("kb.read", "identity.read", "tickets.read"),
    # An internal team on a trial: the same reads as team-script, a handful of calls a day.
    "trial-team": ("kb.read", "identity.read", "tickets.read"),
}

# (requests per minute, burst) of the principals held to a rate limit, in every service they call
# (fte_runtime.settings.RateLimit). The mesh's own callers are not limited.
RATE_LIMITS: Mapping[str, tuple[float, int]] = {
    "kb-reader": (600, 60),
    "team-script": (60, 5),
    # A burst above its daily quota, so the quota is what refuses its sixth call of a day.
    "trial-team": (60, 10),
}

# (calls per UTC day, per UTC month; None: no such window) of the principals held to a quota, in
# every service they call (fte_runtime.settings.Quota). The mesh's own callers have none.
QUOTAS: Mapping[str, tuple[int | None, int | None]] = {
    # About a sixth of what its rate limit would allow in a day.
    "kb-reader": (150_000, 3_000_000),
    "team-script": (10_000, 200_000),
    "trial-team": (5, None),
}


# The agent reader's corpus vectors, computed once per checkout (by `make setup`) and shared by
# `make run`, the tests and the benches.
READER_CACHE_DIR = Path(__file__).resolve().parents[2] / ".local" / "cache" / "reader"


@dataclass(frozen=True)
class StackInfo:
    """What a service needs to know about the rest of the stack."""

    state_dir: Path
    database_url: str
    kafka_bootstrap: str
    kafka_idempotence: bool
    envoy_target: str
    tokens: Mapping[str, str]  # principal -> token
    ports: Mapping[str, int]  # component -> port (grpc or http), and "<svc>-metrics"
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. fake provider URLs

    def auth_tokens_json(self) -> str:
        return json.dumps({tok: token_grant(p) for p, tok in self.tokens.items()})


def token_grant(principal: str) -> dict[str, object]:
    """The `AUTH_TOKENS` entry of a principal: its scopes and, when it has them, its rate limit
    and quota."""
    grant: dict[str, object] = {"principal": principal, "scopes": list(GRANTS[principal])}
    if principal in RATE_LIMITS:
        per_minute, burst = RATE_LIMITS[principal]
        grant["rate_limit"] = {"requests_per_minute": per_minute, "burst": burst}
    if principal in QUOTAS:
        per_day, per_month = QUOTAS[principal]
        grant["quota"] = {k: v for k, v in (("per_day", per_day), ("per_month", per_month)) if v is not None}
    return grant


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    kind: str  # "grpc" or "http"
    env: Callable[[StackInfo], dict[str, str]]
    argv: tuple[str, ...] = ("serve",)
    # Commands run once the service is healthy, e.g. loading the sample knowledge base.
    after_start: Callable[[StackInfo], list[list[str]]] = lambda info: []

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


def _grpc_env(prefix: str, name: str, info: StackInfo) -> dict[str, str]:
    return {
        f"{prefix}GRPC_HOST": "127.0.0.1",
        f"{prefix}GRPC_PORT": str(info.ports[name]),
        f"{prefix}METRICS_PORT": str(info.ports.get(f"{name}-metrics", 0)),
        f"{prefix}AUTH_TOKENS": info.auth_tokens_json(),
        f"{prefix}DATABASE_URL": info.database_url,
        f"{prefix}KAFKA_BOOTSTRAP": info.kafka_bootstrap,
        f"{prefix}KAFKA_IDEMPOTENCE": str(info.kafka_idempotence).lower(),
    }


def _knowledge_env(info: StackInfo) -> dict[str, str]:
    return _grpc_env("FTE_KNOWLEDGE_", "knowledge", info)


def _knowledge_sample_kb(info: StackInfo) -> list[list[str]]:
    """Loads the sample knowledge base (services/knowledge/sample_kb); unchanged articles are
    skipped, so a second start only re-reads the files."""
    spec = importlib.util.find_spec("fte_knowledge")
    if spec is None or spec.origin is None:
        return []
    sample_kb = Path(spec.origin).parent.parent / "sample_kb"
    if not sample_kb.is_dir():
        return []
    return [[sys.executable, "-m", "fte_knowledge", "import", str(sample_kb), "--no-progress"]]


def _identity_env(info: StackInfo) -> dict[str, str]:
    return _grpc_env("FTE_IDENTITY_", "identity", info)


def _notifier_env(info: StackInfo) -> dict[str, str]:
    env = _grpc_env("FTE_NOTIFIER_", "notifier", info)
    # Twilio status callbacks go to the gateway.
    env["FTE_NOTIFIER_GATEWAY_BASE_URL"] = f"http://127.0.0.1:{info.ports['gateway']}"
    # With the local fakes, email replies go to the fake mailbox (threaded with the mail the
    # gateway read from it) and WhatsApp replies to the fake Twilio; without them deliveries stay
    # in the notifier's local outbox.
    if "gmail_api_url" in info.extra:
        env["FTE_NOTIFIER_GMAIL_API_ENDPOINT"] = info.extra["gmail_api_url"]
        env["FTE_NOTIFIER_GMAIL_SENDER"] = info.extra.get("gmail_address", "support@example.com")
    if "twilio_api_url" in info.extra:
        env["FTE_NOTIFIER_TWILIO_API_BASE_URL"] = info.extra["twilio_api_url"]
        env["FTE_NOTIFIER_TWILIO_ACCOUNT_SID"] = info.extra["twilio_account_sid"]
        env["FTE_NOTIFIER_TWILIO_AUTH_TOKEN"] = info.extra["twilio_auth_token"]
    return env


def _agent_env(info: StackInfo) -> dict[str, str]:
    env = _grpc_env("FTE_AGENT_", "agent", info)
    env.update(
        {
            "FTE_AGENT_KNOWLEDGE_TARGET": info.envoy_target,
            "FTE_AGENT_IDENTITY_TARGET": info.envoy_target,
            "FTE_AGENT_NOTIFIER_TARGET": info.envoy_target,
            "FTE_AGENT_SERVICE_TOKEN": info.tokens["agent"],
            # A restarted worker rejoins its group within seconds.
            "FTE_AGENT_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "FTE_AGENT_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "FTE_AGENT_LOG_JSON": "true",
            "FTE_AGENT_READER_CACHE_DIR": str(READER_CACHE_DIR),
        }
    )
    return env


def _gateway_env(info: StackInfo) -> dict[str, str]:
    env = {
        "FTE_GATEWAY_HTTP_HOST": "127.0.0.1",
        "FTE_GATEWAY_HTTP_PORT": str(info.ports["gateway"]),
        "FTE_GATEWAY_METRICS_PORT": str(info.ports.get("gateway-metrics", 0)),
        "FTE_GATEWAY_KAFKA_BOOTSTRAP": info.kafka_bootstrap,
        "FTE_GATEWAY_KAFKA_IDEMPOTENCE": str(info.kafka_idempotence).lower(),
        "FTE_GATEWAY_AGENT_TARGET": info.envoy_target,
        "FTE_GATEWAY_SERVICE_TOKEN": info.tokens["gateway"],
        "FTE_GATEWAY_DATABASE_URL": info.database_url,
    }
    # Local mode: the fake Gmail mailbox and the local certs endpoint (fte_stack.providers).
    local = {
        "gmail_api_url": "FTE_GATEWAY_GMAIL_API_ENDPOINT",
        "gmail_address": "FTE_GATEWAY_GMAIL_ADDRESS",
        "google_certs_url": "FTE_GATEWAY_GOOGLE_CERTS_URL",
        "gmail_push_audience": "FTE_GATEWAY_GMAIL_PUSH_AUDIENCE",
        "gmail_push_service_account": "FTE_GATEWAY_GMAIL_PUSH_SERVICE_ACCOUNT",
    }
    env.update({var: info.extra[key] for key, var in local.items() if key in info.extra})
    if "twilio_auth_token" in info.extra:
        env["FTE_GATEWAY_TWILIO_AUTH_TOKEN"] = info.extra["twilio_auth_token"]
    if "gmail_api_url" not in info.extra:
        env["FTE_GATEWAY_GMAIL_ENABLED"] = "false"
    return env


def _console_env(info: StackInfo) -> dict[str, str]:
    env = {
        "FTE_CONSOLE_HTTP_HOST": "127.0.0.1",
        "FTE_CONSOLE_HTTP_PORT": str(info.ports["console"]),
        "FTE_CONSOLE_AGENT_TARGET": info.envoy_target,
        "FTE_CONSOLE_IDENTITY_TARGET": info.envoy_target,
        "FTE_CONSOLE_KNOWLEDGE_TARGET": info.envoy_target,
        "FTE_CONSOLE_SERVICE_TOKEN": info.tokens["console"],
        "FTE_CONSOLE_DATABASE_URL": info.database_url,
        # The live queue's consumer joins its group within seconds.
        "FTE_CONSOLE_KAFKA_BOOTSTRAP": info.kafka_bootstrap,
        "FTE_CONSOLE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "FTE_CONSOLE_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        # Plain http on 127.0.0.1: a Secure cookie would never be sent back.
        "FTE_CONSOLE_COOKIE_SECURE": "false",
    }
    # With traces on, its trace page reads the stack's Jaeger.
    if "jaeger_query_url" in info.extra:
        env["FTE_CONSOLE_TRACES_URL"] = info.extra["jaeger_query_url"]
    return env


def _console_first_admin(info: StackInfo) -> list[list[str]]:
    """The first admin account; its password is written once to the state folder (and printed)."""
    return [
        [sys.executable, "-m", "fte_console", "users", "first-admin", "--password-file",
         str(info.state_dir / "console-admin-password")],
    ]  # fmt: skip


def _mcp_env(info: StackInfo) -> dict[str, str]:
    # No token of its own: it checks each caller's bearer against the mesh's token configuration
    # and calls the mesh (through Envoy) with that same token.
    return {
        "FTE_MCP_HTTP_HOST": "127.0.0.1",
        "FTE_MCP_HTTP_PORT": str(info.ports["mcp"]),
        "FTE_MCP_METRICS_PORT": str(info.ports.get("mcp-metrics", 0)),
        "FTE_MCP_AUTH_TOKENS": info.auth_tokens_json(),
        "FTE_MCP_KNOWLEDGE_TARGET": info.envoy_target,
        "FTE_MCP_IDENTITY_TARGET": info.envoy_target,
        "FTE_MCP_AGENT_TARGET": info.envoy_target,
    }


# Start order: dependencies first. The edges are last: the gateway, the staff console and the
# MCP server.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("identity", "fte_identity", "grpc", _identity_env),
    ServiceSpec("knowledge", "fte_knowledge", "grpc", _knowledge_env, after_start=_knowledge_sample_kb),
    ServiceSpec("notifier", "fte_notifier", "grpc", _notifier_env),
    ServiceSpec("agent", "fte_agent", "grpc", _agent_env),
    ServiceSpec("gateway", "fte_gateway", "http", _gateway_env),
    ServiceSpec("console", "fte_console", "http", _console_env, after_start=_console_first_admin),
    ServiceSpec("mcp", "fte_mcp", "http", _mcp_env),
)
