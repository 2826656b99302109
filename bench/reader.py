"""What reading a message costs the agent: the learned reader (language detection, the fast
MiniLM stage, the multilingual e5 stage when needed, rules) against the regex policy it replaced,
measured in the same run on the same messages (the frozen dev set and the paraphrase set).

The baseline is the policy module as it was before the reader (`--baseline-rev`, read from git and
loaded as a module), so both are measured on this machine at the same time. CPU time of this
process per message, median of --rounds passes.

    .venv/bin/python bench/reader.py [--rounds 3] [--baseline-rev 4ada1b0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

from fte_agent import packs, reader
from fte_agent.policy import Policy
from fte_stack.services import READER_CACHE_DIR

ROOT = Path(__file__).resolve().parents[1]
SETS = [ROOT / "services/agent/tests/data/dev_set.jsonl", ROOT / "services/agent/tests/data/paraphrase_set.jsonl"]
LANGUAGES = ("en", "es", "de")


def messages() -> list[tuple[str, str]]:
    rows = [json.loads(line) for path in SETS for line in path.read_text("utf-8").splitlines() if line.strip()]
    return [(r["text"], r.get("subject", "")) for r in rows]


def baseline(rev: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{rev}:services/agent/fte_agent/policy.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("regex_policy")
    sys.modules["regex_policy"] = module  # dataclasses look their module up
    exec(compile(source, "regex_policy.py", "exec"), module.__dict__)  # noqa: S102 - our own file at a commit
    return module


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rev", default="4ada1b0")
    args = parser.parse_args()
    texts = messages()
    old = baseline(args.baseline_rev)
    policy = Policy(LANGUAGES, packs.require(LANGUAGES), reader.trained(READER_CACHE_DIR))
    await policy.assess("warm up", "")
    old_ms: list[float] = []
    new_ms: list[float] = []
    stages: Counter[str] = Counter()
    for _ in range(args.rounds):
        start = time.process_time()
        for text, subject in texts:
            old.assess(text, subject, LANGUAGES)
        old_ms.append((time.process_time() - start) * 1000 / len(texts))
        stages.clear()
        start = time.process_time()
        for text, subject in texts:
            stages[(await policy.assess(text, subject)).evidence.get("stage", "none")] += 1
        new_ms.append((time.process_time() - start) * 1000 / len(texts))
    o, n = statistics.median(old_ms), statistics.median(new_ms)
    share = ", ".join(f"{k} {v / len(texts):.0%}" for k, v in sorted(stages.items()))
    print(f"{len(texts)} messages, {args.rounds} rounds (median CPU ms per message)")
    print(f"  regex policy ({args.baseline_rev}): {o:.3f} ms")
    print(f"  learned reader:          {n:.3f} ms  ({n / o:.0f}x; stages: {share})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
