"""Generate the Python code of every contract under protos/ into gen/python (or --out).

`--check` generates into a temporary folder and fails if it differs from gen/python, so CI
catches generated code that drifted from its protos.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen" / "python"


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = resources.files("grpc_tools") / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *files,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    (out / "fte" / "py.typed").write_text("")


def diff(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out: list[str] = []

    def walk(c: filecmp.dircmp[str], rel: str) -> None:
        out.extend(f"{rel}{n}: only in {c.left}" for n in c.left_only)
        out.extend(f"{rel}{n}: missing from {c.left}" for n in c.right_only)
        out.extend(f"{rel}{n}: differs" for n in c.diff_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{rel}{name}/")

    walk(cmp, "")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/python is out of date")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            problems = diff(GEN / "fte", Path(tmp) / "fte")
        if problems:
            print("generated code is out of date; run `make protos`:", *problems, sep="\n  ")
            return 1
        print("generated code matches protos/")
        return 0
    shutil.rmtree(GEN / "fte", ignore_errors=True)
    generate(GEN)
    print(f"generated {sum(1 for _ in (GEN / 'fte').rglob('*.py'))} modules into gen/python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
