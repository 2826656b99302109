"""Build the wheels internal teams install, `fte-contracts` (gen/) and `fte-client`
(clients/python/fte-client), into dist/ (or --out).

Each project is copied to a scratch folder and built there with the setuptools already in the
project's virtualenv, so a build leaves nothing in the tree and needs no network."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = (ROOT / "gen", ROOT / "clients" / "python" / "fte-client")
SKIP = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests", ".mypy_cache")


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="fte-dist-") as scratch:
        for project in PROJECTS:
            copy = Path(scratch) / project.name
            shutil.copytree(project, copy, ignore=SKIP)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                    str(out),
                    str(copy),
                ],
                check=True,
            )
    return sorted(out.glob("*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    for wheel in build(args.out):
        print(wheel.relative_to(ROOT) if wheel.is_relative_to(ROOT) else wheel)


if __name__ == "__main__":
    main()
