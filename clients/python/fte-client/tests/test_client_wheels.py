"""`make dist` builds wheels that install into a fresh virtualenv with no network and make a call
against the stack. The new environment sees the third-party packages the project's virtualenv
already has (grpcio, protobuf, ...) through a folder of links, never the project's own packages,
so only the wheels can provide `fte_client` and `fte`."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from fte_stack.stack import Stack

ROOT = Path(__file__).resolve().parents[4]
CALL = """
import asyncio, os, sys
import fte_client
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_client import v1

for module in (fte_client, ks):
    assert module.__file__.startswith(sys.prefix), module.__file__

async def main() -> None:
    async with v1.connect(os.environ["FTE_TARGET"], token=os.environ["FTE_TOKEN"]) as client:
        found = await client.knowledge.SearchKnowledge(ks.SearchKnowledgeRequest(query="reset my password"))
        print("found", found.results[0].article)

asyncio.run(main())
"""


def third_party_site(into: Path) -> Path:
    """Links to everything in this interpreter's site-packages but the project's own packages."""
    site = Path(sysconfig.get_paths()["purelib"])
    into.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("fte", "__editable__", "_fte")) or name.endswith(".pth") or name == "__pycache__":
            continue
        (into / entry.name).symlink_to(entry)
    return into


def test_the_wheels_install_offline_and_call_the_stack(full_stack: Stack, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "dist.py"), "--out", str(dist)], check=True)
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["fte_client", "fte_contracts"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "project-deps.pth").write_text(f"{third_party_site(tmp_path / 'deps')}\n")
    before = subprocess.run([str(python), "-c", "import fte_client"], check=False, capture_output=True, text=True)
    assert before.returncode != 0, "the fresh environment must not see the project's own packages"

    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--disable-pip-version-check"]
        + [str(dist / w) for w in wheels],
        check=True,
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FTE_")},
        "FTE_TARGET": f"127.0.0.1:{full_stack.ports['envoy']}",
        "FTE_TOKEN": full_stack.tokens["kb-reader"],
    }
    done = subprocess.run([str(python), "-c", CALL], check=False, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "found articles/" in done.stdout
