"""services/<svc>/Dockerfile: parsed with the BuildKit parser and linted with hadolint (no
container engine here), checked for the image rules, and its build stage replayed: the files its
COPY lines take from the repository build the same wheels the image installs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("knowledge", "identity", "notifier", "agent", "gateway", "console", "mcp")
GRPC_PORTS = {"knowledge": 50051, "identity": 50052, "notifier": 50053, "agent": 50054}
HTTP_PORTS = {"gateway": 8080, "console": 8090, "mcp": 8095}
# An exact CPython 3.11 patch release on Debian bookworm, optionally pinned to a digest as well.
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?")
WORKDIR = "/src"
# The projects of this repository a service may depend on, and where each is built from. An image
# installs them from its own copied sources: a name left to the package index would install
# whatever someone published under it.
WORKSPACE = {"fte-contracts": "gen", "fte-runtime": "libs", "fte-client": "clients/python/fte-client"}


def workspace_sources(svc: str) -> list[str]:
    """The folders an image of `svc` installs, in install order: gen and libs, then every project
    of this repository the service needs (directly or through another), then the service."""
    needed: list[str] = []
    todo = [f"services/{svc}"]
    while todo:
        project = tomllib.loads((REPO / todo.pop() / "pyproject.toml").read_text())["project"]
        for dep in project.get("dependencies", []):
            name = re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0].lower().replace("_", "-")
            if name in WORKSPACE and WORKSPACE[name] not in needed:
                needed.append(WORKSPACE[name])
                todo.append(WORKSPACE[name])
    extra = [folder for folder in WORKSPACE.values() if folder in needed and folder not in ("gen", "libs")]
    return ["gen", "libs", *extra, f"services/{svc}"]


@dataclass
class Stage:
    image: str
    name: str | None
    commands: list[dockerfile.Command]

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]

    def last(self, cmd: str) -> dockerfile.Command:
        found = self.all(cmd)
        assert found, f"no {cmd} in stage {self.name or self.image}"
        return found[-1]


def stages(svc: str) -> list[Stage]:
    result: list[Stage] = []
    for command in dockerfile.parse_file(str(REPO / "services" / svc / "Dockerfile")):
        if command.cmd == "FROM":
            value = command.value
            name = value[2] if len(value) == 3 and value[1].upper() == "AS" else None
            result.append(Stage(value[0], name, []))
        else:
            assert result, f"{command.original} before the first FROM"
            result[-1].commands.append(command)
    return result


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage.all("ENV"):
        values = list(command.value)
        env.update(zip(values[::2], values[1::2], strict=True))
    return env


def port_of(svc: str) -> int:
    return GRPC_PORTS.get(svc) or HTTP_PORTS[svc]


@pytest.mark.parametrize("svc", SERVICES)
def test_hadolint_finds_nothing(svc: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint) if hadolint.exists() else "hadolint", "--no-color", f"services/{svc}/Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install grpcio\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


@pytest.mark.parametrize("svc", SERVICES)
def test_multi_stage_on_one_pinned_base(svc: str) -> None:
    found = stages(svc)
    assert len(found) >= 2, "a build stage and a runtime stage"
    for stage in found:
        assert PINNED_BASE.fullmatch(stage.image), f"{stage.image} is not an exact python:3.11.x-slim-bookworm"
    assert len({s.image for s in found}) == 1, "the virtualenv is copied between stages: same base image"
    assert not [c for s in found for c in s.commands if c.cmd == "ADD"], "COPY only"


@pytest.mark.parametrize("svc", SERVICES)
def test_build_stage_takes_only_this_service_gen_and_libs(svc: str) -> None:
    build = stages(svc)[0]
    assert build.last("WORKDIR").value == (WORKDIR,)
    folders = workspace_sources(svc)
    allowed = tuple(f"{folder}/" for folder in folders)
    sources = [src for c in build.all("COPY") for src in c.value[:-1]]
    for src in sources:
        assert src.startswith(allowed), f"{src} is not this service's or a project it needs ({folders})"
        assert "tests" not in Path(src).parts
        assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"
    for needed in (f"services/{svc}/pyproject.toml", f"services/{svc}/fte_{svc}", "gen/pyproject.toml"):
        assert needed in sources
    installs = [c for c in build.all("RUN") if "pip install " in c.value[0]]
    assert len(installs) == 1
    args = installs[0].value[0].split()
    assert "--no-cache-dir" in args
    # Every project of this repository it needs comes from the copied sources, not an index.
    assert [a for a in args if a.startswith("./")] == [f"./{folder}" for folder in folders]


@pytest.mark.parametrize("svc", SERVICES)
def test_runtime_stage_is_non_root_health_checked_and_starts_the_service(svc: str) -> None:
    runtime = stages(svc)[-1]
    copies = runtime.all("COPY")
    assert copies, "the runtime stage copies the virtualenv"
    for c in copies:
        assert "--from=build" in c.flags, f"{c.original}: only the build stage's output goes in"
    user = runtime.last("USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric user, so Kubernetes can check runAsNonRoot"
    assert int(uid) != 0
    # Kubernetes manifests run the pods with the same ids.
    manifest = yaml.safe_load_all((REPO / "deploy" / "k8s" / "base" / f"{svc}.yaml").read_text())
    [dep] = [d for d in manifest if d and d["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)

    port = port_of(svc)
    env = env_of(runtime)
    prefix = f"FTE_{svc.upper()}_"
    kind = "GRPC" if svc in GRPC_PORTS else "HTTP"
    assert env[f"{prefix}{kind}_HOST"] == "0.0.0.0", "listens beyond loopback inside the container"
    assert env[f"{prefix}{kind}_PORT"] == str(port)
    assert str(port) in runtime.last("EXPOSE").value

    health = runtime.last("HEALTHCHECK")
    assert health.value[0] == "CMD"
    probe = ["python", "-m", "fte_runtime.healthcheck", "--port", str(port)]
    if svc in HTTP_PORTS:
        probe += ["--http", "/healthz"]
    assert list(health.value[1:]) == probe
    assert any(f.startswith("--interval=") for f in health.flags)

    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint.json
    assert list(entrypoint.value) == ["python", "-m", f"fte_{svc}"]
    assert list(runtime.last("CMD").value) == ["serve"]


def test_docker_context_leaves_out_local_state() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "**/__pycache__", "**/*.egg-info"} <= ignored


def replay_copies(svc: str, root: Path) -> Path:
    """The build stage's file system after its COPY lines (WORKDIR /src), from this checkout."""
    src_root = root / WORKDIR.lstrip("/")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", "tests")
    for command in stages(svc)[0].all("COPY"):
        *sources, dest = command.value
        for src in sources:
            origin = REPO / src
            target = src_root / dest
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target = target / origin.name if dest.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    return src_root


@pytest.mark.parametrize("svc", SERVICES)
def test_build_stage_makes_complete_wheels(svc: str, tmp_path: Path) -> None:
    """What `pip install ./gen ./libs ./services/<svc>` would install, built offline from only
    the copied files: every file of the service's package (migrations, static files) is in it."""
    src = replay_copies(svc, tmp_path)
    out = tmp_path / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out),
            *(f"./{folder}" for folder in workspace_sources(svc)),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    projects = {"gen": "fte_contracts", "libs": "fte_runtime", "clients/python/fte-client": "fte_client"}
    assert set(wheels) == {projects.get(folder, f"fte_{svc}") for folder in workspace_sources(svc)}

    def names(wheel: Path) -> set[str]:
        with zipfile.ZipFile(wheel) as zf:
            return set(zf.namelist())

    assert "fte_runtime/healthcheck.py" in names(wheels["fte_runtime"])
    assert "fte/common/v1/common_pb2.py" in names(wheels["fte_contracts"])
    package = REPO / "services" / svc / f"fte_{svc}"
    expected = {
        p.relative_to(package.parent).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    missing = sorted(expected - names(wheels[f"fte_{svc}"]))
    assert not missing, f"the image would lack {missing}"
