"""Run a command against a real Apache Kafka 4.x broker (KRaft, one combined broker+controller).

The broker jars come from Maven Central through kafka/pom.xml and run on the machine's JDK.
    python scripts/apache_kafka.py run -- CMD ...   start the broker, run CMD with
        `--kafka-bootstrap HOST:PORT --kafka-idempotence` appended, stop the broker; the broker
        is restarted whenever it dies (same ports, same data) and its pid is in the file named
        by FTE_KAFKA_BROKER_PID_FILE in CMD's environment
    python scripts/apache_kafka.py serve            start it and wait for Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "kafka"
LIBS = KAFKA / "target" / "libs"


def resolve_jars() -> None:
    if LIBS.is_dir() and any(LIBS.glob("kafka_2.13-*.jar")):
        return
    if shutil.which("mvn") is None:
        sys.exit("mvn is required to resolve the Apache Kafka jars (apt-get install maven)")
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(KAFKA / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={LIBS}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        sys.exit("a JDK 17+ is required (java not found)")
    return found


def _jvm() -> list[str]:
    return [
        java(),
        "-Xmx512m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={KAFKA / 'log4j2.properties'}",
        "-cp",
        f"{LIBS}/*",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "KAFKA_HEAP_OPTS": "-Xmx512m"}


def prepare(workdir: Path) -> int:
    """Writes the broker's configuration and formats its storage; returns its port."""
    port, controller = free_port(), free_port()
    logs = workdir / "data"
    props = workdir / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={logs}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "message.max.bytes=4194304",
            ]
        )
        + "\n"
    )
    subprocess.run(
        [*_jvm(), "kafka.tools.StorageTool", "format", "--standalone", "-t", uuid.uuid4().hex[:22], "-c", str(props)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=_env(),
    )
    return port


def launch(workdir: Path, port: int, timeout: float = 90.0) -> subprocess.Popen[bytes]:
    """Starts the prepared broker (again, after a crash: same ports, same data) and waits for it."""
    out = (workdir / "kafka.log").open("ab")
    proc = subprocess.Popen(
        [*_jvm(), "kafka.Kafka", str(workdir / "server.properties")], stdout=out, stderr=subprocess.STDOUT, env=_env()
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            sys.exit(f"Apache Kafka exited with {proc.returncode}; see {workdir / 'kafka.log'}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"Apache Kafka did not start within {timeout:.0f} s")
        time.sleep(0.2)
    (workdir / "broker.pid").write_text(str(proc.pid))
    return proc


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = prepare(workdir)
    return launch(workdir, port), f"127.0.0.1:{port}"


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Supervised:
    """The broker restarted whenever it dies, as a kubelet would (the soak SIGKILLs it); its
    current pid is in `pid_file` for whoever wants to kill it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = prepare(workdir)
        self.proc = launch(workdir, self.port)
        self.pid_file = workdir / "broker.pid"
        self.restarts = 0
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._keep_up, daemon=True)
        self._watch.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _keep_up(self) -> None:
        while not self._stopping.is_set():
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            self.restarts += 1
            print(f"Apache Kafka exited with code {code}; restarting (restart {self.restarts})", flush=True)
            self.proc = launch(self.workdir, self.port)

    def stop(self) -> None:
        self._stopping.set()
        stop_broker(self.proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["run", "serve"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    resolve_jars()
    workdir = Path(tempfile.mkdtemp(prefix="fte-kafka-"))
    started = time.monotonic()
    broker = Supervised(workdir)
    print(f"Apache Kafka (KRaft) ready at {broker.bootstrap} in {time.monotonic() - started:.1f}s", flush=True)
    try:
        if args.mode == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            return 0
        command = [c for c in args.command if c != "--"]
        env = {**os.environ, "FTE_KAFKA_BROKER_PID_FILE": str(broker.pid_file)}
        argv = [*command, "--kafka-bootstrap", broker.bootstrap, "--kafka-idempotence"]
        return subprocess.run(argv, check=False, env=env).returncode
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
