"""The whole local stack as one async context: PostgreSQL, the broker, the gRPC services, Envoy
in front of them, then the gateway. `make run` uses fixed ports and a kept state folder; tests
use free ports and a temporary folder."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from fte_runtime import topics
from fte_runtime.kafka import ensure_topics
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fte_stack.broker import TansuBroker
from fte_stack.envoy import EnvoyProxy
from fte_stack.jaeger import JaegerServer
from fte_stack.postgres import PostgresServer
from fte_stack.procs import Child, free_port, port_open
from fte_stack.providers import LocalProviders
from fte_stack.services import GRANTS, SERVICES, ServiceSpec, StackInfo
from fte_stack.supervisor import Exited, Starter, Supervisor

log = logging.getLogger("fte.stack")

# How long a service may take from its process start to serving.
START_TIMEOUT_SECONDS = 180

DEFAULT_PORTS = {
    "postgres": 55432,
    "kafka": 19092,
    "envoy": 9000,
    "envoy-admin": 9901,
    "gateway": 8080,
    "knowledge": 50051,
    "identity": 50052,
    "notifier": 50053,
    "agent": 50054,
    "knowledge-metrics": 9181,
    "identity-metrics": 9182,
    "notifier-metrics": 9183,
    "agent-metrics": 9184,
    "gateway-metrics": 9185,
    "console": 8090,
    "mcp": 8095,
    "mcp-metrics": 9186,
    # Local stand-ins for Gmail, Twilio and Google's certs endpoint (fte_stack.providers).
    "fake-gmail": 8081,
    "fake-google-certs": 8082,
    "fake-twilio": 8083,
    # The local trace backend (`--traces`): OTLP/gRPC in, the Jaeger UI and query API out.
    "jaeger-otlp": 4317,
    "jaeger-ui": 16686,
}


@dataclass
class StackConfig:
    state_dir: Path
    ports: dict[str, int] = field(default_factory=dict)  # missing entries get free ports
    services: Sequence[str] | None = None  # None: every installed service
    kafka_bootstrap: str | None = None  # an external broker (Apache Kafka) instead of Tansu
    kafka_idempotence: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    run_after_start: bool = True
    # Start the local provider fakes (Gmail mailbox, Twilio, Google certs) and point the services at them.
    local_providers: bool = True
    # Restart every process that dies (see `supervisor`), as Kubernetes would.
    supervise: bool = True
    # The fake Twilio posts signed status callbacks (sent, delivered) to the gateway. Off for
    # tests: seconds after a test they would still land on a broker other tests share.
    provider_callbacks: bool = False
    # Start Jaeger (fte_stack.jaeger) and have every service and Envoy export their spans to it.
    traces: bool = False

    @classmethod
    def for_tests(cls, state_dir: Path, **kwargs: object) -> StackConfig:
        return cls(state_dir=state_dir, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def for_local_run(cls, state_dir: Path, *, traces: bool = False) -> StackConfig:
        return cls(state_dir=state_dir, ports=dict(DEFAULT_PORTS), provider_callbacks=True, traces=traces)


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        names = list(DEFAULT_PORTS)
        self.ports = {name: config.ports.get(name) or free_port() for name in names}
        wanted = set(config.services) if config.services is not None else None
        self.specs = [s for s in SERVICES if s.installed and (wanted is None or s.name in wanted)]
        self.tokens = self._load_tokens()
        self.postgres = PostgresServer(self.state_dir / "postgres", self.ports["postgres"])
        self.broker: TansuBroker | None = None
        self.envoy: EnvoyProxy | None = None
        self.children: dict[str, Child] = {}
        self.info: StackInfo | None = None
        self.providers: LocalProviders | None = None
        self.jaeger: JaegerServer | None = None
        self.supervisor = Supervisor()

    def _load_tokens(self) -> dict[str, str]:
        path = self.state_dir / "tokens.json"
        tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        for principal in GRANTS:
            tokens.setdefault(principal, secrets.token_urlsafe(24))
        path.write_text(json.dumps(tokens, indent=2))
        path.chmod(0o600)
        return tokens

    @property
    def kafka_bootstrap(self) -> str:
        if self.config.kafka_bootstrap:
            return self.config.kafka_bootstrap
        assert self.broker is not None
        return self.broker.bootstrap

    async def start(self) -> StackInfo:
        started = time.monotonic()
        await self.postgres.start()
        self._watch("postgres", self._postgres_exited, self.postgres.start)
        if not self.config.kafka_bootstrap:
            broker = self.broker = TansuBroker(self.ports["kafka"], self.state_dir / "tansu.log")
            await broker.start()
            self._watch("tansu", lambda: _exited(broker.child), self._restart_broker)
        await ensure_topics(self.kafka_bootstrap, topics.ALL)
        if self.config.traces:
            jaeger = self.jaeger = JaegerServer(
                self.state_dir / "jaeger", self.ports["jaeger-otlp"], self.ports["jaeger-ui"]
            )
            await jaeger.start()
            self._watch("jaeger", lambda: _exited(jaeger.child), jaeger.start)
        provider_info: dict[str, str] = {}
        if self.config.local_providers:
            self.providers = LocalProviders(
                gmail_port=self.ports["fake-gmail"],
                certs_port=self.ports["fake-google-certs"],
                twilio_port=self.ports["fake-twilio"],
                callbacks=self.config.provider_callbacks,
                gateway_port=self.ports["gateway"],
            )
            provider_info = await self.providers.start()
        self.info = StackInfo(
            state_dir=self.state_dir,
            database_url=self.postgres.dsn(),
            kafka_bootstrap=self.kafka_bootstrap,
            kafka_idempotence=self.config.kafka_idempotence,
            envoy_target=f"127.0.0.1:{self.ports['envoy']}",
            tokens=self.tokens,
            ports=self.ports,
            extra={**provider_info, **self.jaeger_info(), **self.config.extra_env},
        )
        # The token configuration every service reads, as a file for local tools (the MCP
        # server's stdio mode: FTE_MCP_AUTH_TOKENS_FILE).
        grants = self.state_dir / "auth-tokens.json"
        grants.touch(mode=0o600)
        grants.write_text(self.info.auth_tokens_json())
        grants.chmod(0o600)
        grpc_specs = [s for s in self.specs if s.kind == "grpc"]
        for spec in grpc_specs:
            await self.start_service(spec)
        self.envoy = EnvoyProxy(
            self.ports["envoy"],
            self.ports["envoy-admin"],
            {s.name: self.ports[s.name] for s in grpc_specs},
            self.state_dir,
            otlp_port=self.jaeger.otlp_port if self.jaeger is not None else None,
        )
        envoy = self.envoy
        await envoy.start()
        self._watch("envoy", lambda: _exited(envoy.child), envoy.start)
        for spec in self.specs:
            if spec.kind == "http":
                await self.start_service(spec)
        log.info("stack up in %.1fs", time.monotonic() - started)
        return self.info

    def trace_env(self) -> dict[str, str]:
        """The standard OpenTelemetry variables pointing a service at the stack's Jaeger."""
        if self.jaeger is None:
            return {}
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.otlp_endpoint,
            # Spans show up in the UI within a second rather than five.
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }

    def jaeger_info(self) -> dict[str, str]:
        """Where the console's trace page reads traces from (Jaeger's HTTP query API)."""
        return {"jaeger_query_url": self.jaeger.ui_url} if self.jaeger is not None else {}

    def spec(self, name: str) -> ServiceSpec:
        return next(s for s in self.specs if s.name == name)

    def _watch(self, name: str, exited: Exited, start: Starter) -> None:
        if self.config.supervise:
            self.supervisor.watch(name, exited, start)

    async def _restart_broker(self) -> None:
        # The embedded broker keeps its log in memory: it comes back empty, so topics are made again.
        assert self.broker is not None
        await self.broker.start()
        await ensure_topics(self.kafka_bootstrap, topics.ALL)

    async def _postgres_exited(self) -> int | None:
        while True:
            if not port_open(self.ports["postgres"]):
                return None
            await asyncio.sleep(1.0)

    async def start_service(self, spec: ServiceSpec) -> None:
        """Starts a service, waits until it serves, and restarts it whenever it dies."""
        await self._launch(spec)
        self._watch(spec.name, lambda: _exited(self.children[spec.name]), lambda: self._launch(spec))

    async def _launch(self, spec: ServiceSpec) -> None:
        assert self.info is not None
        env = {**spec.env(self.info), **self.trace_env(), **self.config.extra_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        child = Child(
            spec.name, [sys.executable, "-m", spec.module, *spec.argv], self.state_dir / f"{spec.name}.log", env
        )
        self.children[spec.name] = child
        proc = await child.start()
        try:
            if spec.kind == "grpc":
                # The agent trains its reader before it serves: seconds on an idle machine, most of a
                # minute on a busy 2-core one.
                await wait_grpc_healthy(f"127.0.0.1:{self.ports[spec.name]}", START_TIMEOUT_SECONDS, spec.name, proc)
            else:
                await wait_http_ready(
                    f"http://127.0.0.1:{self.ports[spec.name]}/readyz", START_TIMEOUT_SECONDS, spec.name, proc
                )
        except Exception as exc:
            raise RuntimeError(f"{spec.name} failed to start: {exc}\n--- {child.log_path} ---\n{child.tail()}") from exc
        if self.config.run_after_start:
            for argv in spec.after_start(self.info):
                cmd = await asyncio.create_subprocess_exec(*argv, env={**child.env})
                if await cmd.wait() != 0:
                    raise RuntimeError(f"{' '.join(argv)} failed")

    async def restart_service(self, name: str, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) a service and start it again with the same settings."""
        await self.supervisor.release(name)
        child = self.children[name]
        if kill:
            child.kill()
            if child.proc is not None:
                await child.proc.wait()
        else:
            await child.stop()
        await self.start_service(self.spec(name))

    async def stop(self) -> None:
        await self.supervisor.close()
        # The edge first, so no new work comes in; then the gRPC services together.
        for spec in reversed(self.specs):
            if spec.kind == "http":
                child = self.children.pop(spec.name, None)
                if child is not None:
                    await child.stop()
        if self.envoy is not None:
            await self.envoy.stop()
        await asyncio.gather(*(c.stop() for c in self.children.values()))
        self.children.clear()
        if self.broker is not None:
            await self.broker.stop()
        await self.postgres.stop()
        if self.jaeger is not None:
            await self.jaeger.stop()
            self.jaeger = None
        if self.providers is not None:
            await self.providers.stop()
            self.providers = None

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _exited(child: Child) -> int | None:
    assert child.proc is not None
    return await child.proc.wait()


async def wait_grpc_healthy(
    target: str, timeout: float, what: str, proc: asyncio.subprocess.Process | None = None, service: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not healthy within {timeout:.0f}s")
            await asyncio.sleep(0.1)


async def wait_http_ready(url: str, timeout: float, what: str, proc: asyncio.subprocess.Process | None = None) -> None:
    deadline = time.monotonic() + timeout

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback URL built here
                return bool(resp.status == 200)
        except OSError:
            return False

    while not await asyncio.to_thread(probe):
        if proc is not None and proc.returncode is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)
