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
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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


def find_traces(ui_url: str, service: str, *, tags: dict[str, str] | None = None, limit: int = 20) -> list[Any]:
    """Traces of `service` from the query API (`/api/traces`), newest first; each is Jaeger's JSON
    (traceID, spans with operationName and processID, processes with serviceName)."""
    query = {"service": service, "limit": str(limit), "lookback": "1h"}
    if tags:
        query["tags"] = json.dumps(tags)
    url = f"{ui_url}/api/traces?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a loopback URL built here
        data: list[Any] = json.load(resp).get("data") or []
    return data


def get_trace(ui_url: str, trace_id: str) -> dict[str, Any] | None:
    """One trace by id, or None when Jaeger has none (yet)."""
    try:
        with urllib.request.urlopen(f"{ui_url}/api/traces/{trace_id}", timeout=10) as resp:  # noqa: S310
            data: list[dict[str, Any]] = json.load(resp).get("data") or []
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise
    return data[0] if data else None


def services_of(trace: dict[str, Any]) -> dict[str, set[str]]:
    """Service name -> the operation names of its spans in `trace`."""
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    out: dict[str, set[str]] = {}
    for span in trace["spans"]:
        out.setdefault(processes[span["processID"]], set()).add(span["operationName"])
    return out


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


def render_tree(trace: dict[str, Any]) -> str:
    """The trace as an indented tree, one span a line: offset from the start, duration, service,
    operation (what the Jaeger UI's timeline shows, for a terminal)."""
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span["references"] if r["spanID"] in spans]
        children.setdefault(parents[0] if parents else None, []).append(span)
    start = min(s["startTime"] for s in trace["spans"])
    lines = [f"trace {trace['traceID']}: {len(spans)} spans, {len(set(processes.values()))} services"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            offset, took = (span["startTime"] - start) / 1000, span["duration"] / 1000
            service = processes[span["processID"]]
            lines.append(f"{offset:9.1f} ms {took:9.1f} ms  {'  ' * depth}{service}: {span['operationName']}")
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)
