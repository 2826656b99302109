"""Build (once) and locate the Jaeger v2 all-in-one binary the local stack runs as its trace
backend (fte_stack.jaeger): it is built from the Go module proxy into a cache folder outside the
clone and reused afterwards. `make setup` runs this.
    python scripts/jaeger.py          print the binary's path, building it first when missing
    python scripts/jaeger.py --check  exit 1 when it is not built yet (builds nothing)
"""

from __future__ import annotations

import argparse
import sys

from fte_stack import jaeger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether it is built")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if jaeger.binary_path().is_file() else 1)
    try:
        print(jaeger.build())
    except RuntimeError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
