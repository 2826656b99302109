"""Run a command against a real Apache Kafka 4.x broker (KRaft, one combined broker+controller).

The broker jars come from Maven Central through kafka/pom.xml and run on the machine's JDK.
    python scripts/apache_kafka.py run -- CMD ...   start the broker, run CMD with
        `--kafka-bootstrap HOST:PORT --kafka-idempotence` appended, stop the broker
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


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
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
    classpath = f"{LIBS}/*"
    env = {**os.environ, "KAFKA_HEAP_OPTS": "-Xmx512m"}
    jvm = [
        java(),
        "-Xmx512m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={KAFKA / 'log4j2.properties'}",
        "-cp",
        classpath,
    ]
    subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "--standalone", "-t", uuid.uuid4().hex[:22], "-c", str(props)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    out = (workdir / "kafka.log").open("wb")
    proc = subprocess.Popen([*jvm, "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            sys.exit(f"Apache Kafka exited with {proc.returncode}; see {workdir / 'kafka.log'}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("Apache Kafka did not start within 90 s")
        time.sleep(0.2)
    return proc, f"127.0.0.1:{port}"


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["run", "serve"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    resolve_jars()
    workdir = Path(tempfile.mkdtemp(prefix="fte-kafka-"))
    started = time.monotonic()
    proc, bootstrap = start_broker(workdir)
    print(f"Apache Kafka (KRaft) ready at {bootstrap} in {time.monotonic() - started:.1f}s", flush=True)
    try:
        if args.mode == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                proc.wait()
            return 0
        command = [c for c in args.command if c != "--"]
        return subprocess.run([*command, "--kafka-bootstrap", bootstrap, "--kafka-idempotence"], check=False).returncode
    finally:
        stop_broker(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
