"""Jaeger v2 all-in-one: the local trace backend (OTLP receiver, in-memory storage, query API, UI).

No package registry ships a Jaeger binary, so it is built once from the Go module proxy into a
cache folder outside the clone (`~/.cache/fte/jaeger-<version>/jaeger`) and reused by every later
clone and run, as Maven caches the Kafka jars. `make setup` builds it (scripts/jaeger.py): the
first time takes several minutes on 2 cores, later runs find it at once. Nothing is built while a
stack or a test starts: without the binary they fail and say how to build it.

`go install ...@version` refuses Jaeger's module (its go.mod has replace directives); resolving it
as a tool dependency of a throwaway module builds it with those replacements applied.
"""

from __future__ import annotations

import asyncio
import fcntl
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fte_runtime.trace_query import get_trace

from fte_stack.procs import Child, free_port, wait_for_port

VERSION = "v1.76.0"
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
CONFIG = Path(__file__).resolve().parent / "jaeger.yaml"


def binary_path() -> Path:
    return Path.home() / ".cache" / "fte" / f"jaeger-{VERSION}" / "jaeger"


def jaeger_binary() -> Path:
    """The built binary; a clear error when `make setup` has not built it yet."""
    path = binary_path()
    if not path.is_file():
        raise RuntimeError(f"Jaeger {VERSION} is not built yet: run `make setup` (or python scripts/jaeger.py)")
    return path


def build() -> Path:
    """Build the binary into the cache unless it is there; its path."""
    target = binary_path()
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go toolchain (1.24+) is needed once to build Jaeger: apt-get install golang-go")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two clones' `make setup` at once: the second waits for the first's build and reuses it.
    with (target.parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            _build(go, target)
    return target


def _build(go: str, target: Path) -> None:
    print(f"building Jaeger {VERSION} into {target.parent} (once; several minutes)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="jaeger-build-") as tmp:
        subprocess.run([go, "mod", "init", "jaegerbuild"], cwd=tmp, check=True, stderr=subprocess.DEVNULL)
        subprocess.run([go, "get", "-tool", f"{PACKAGE}@{VERSION}"], cwd=tmp, check=True)
        partial = target.with_suffix(".partial")
        subprocess.run([go, "build", "-o", str(partial), PACKAGE], cwd=tmp, check=True)
        partial.replace(target)  # atomic: a half-written binary is never taken for a built one


def render_config(otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int, health: int) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    loopback = "127.0.0.1:{}".format
    protocols = config["receivers"]["otlp"]["protocols"]
    protocols["grpc"]["endpoint"] = loopback(otlp_grpc)
    protocols["http"]["endpoint"] = loopback(otlp_http)
    query = config["extensions"]["jaeger_query"]
    query["http"]["endpoint"] = loopback(query_http)
    query["grpc"]["endpoint"] = loopback(query_grpc)
    config["extensions"]["healthcheckv2"]["http"]["endpoint"] = loopback(health)
    return config


class JaegerServer:
    """Jaeger on loopback ports: OTLP/gRPC on `otlp_port`, the UI and HTTP query API on `ui_port`."""

    def __init__(self, state_dir: Path, otlp_port: int | None = None, ui_port: int | None = None) -> None:
        self.otlp_port = otlp_port or free_port()
        self.ui_port = ui_port or free_port()
        self.health_port = free_port()
        state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = state_dir / "jaeger.yaml"
        config = render_config(self.otlp_port, free_port(), self.ui_port, free_port(), self.health_port)
        self.config_path.write_text(yaml.safe_dump(config))
        self.child = Child(
            "jaeger", [str(jaeger_binary()), "--config", str(self.config_path)], state_dir / "jaeger.log"
        )

    @property
    def otlp_endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT (OTLP over gRPC, plaintext)."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    async def start(self) -> None:
        proc = await self.child.start()
        await wait_for_port(self.otlp_port, 60, "jaeger", proc)
        await wait_for_port(self.ui_port, 60, "jaeger", proc)

    async def stop(self) -> None:
        # It drains its receivers and pipelines first: seconds, not milliseconds.
        await self.child.stop(15)


async def wait_for_trace(
    ui_url: str, trace_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any] | None:
    """Poll the trace until `until(trace)` holds (spans arrive batch by batch, service by service)
    or `timeout` passed; the last version seen."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(get_trace, ui_url, trace_id) or seen
        if seen is not None and until(seen):
            return seen
        await asyncio.sleep(0.5)
    return seen
