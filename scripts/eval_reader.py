"""`make eval`: the agent's reader on the frozen dev set, the paraphrase set and its translations,
and k-fold cross-validation of the training corpus; accuracy per label and the confusions."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from fte_agent import evaluation, packs, reader
from fte_agent.policy import Policy
from fte_agent.settings import AgentSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "services" / "agent" / "tests" / "data"
CACHE = ROOT / ".local" / "cache" / "reader"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--misses", action="store_true", help="list every miss (never for tuning on test sets)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    settings = AgentSettings()
    cache = settings.reader_cache_dir or CACHE
    model = reader.trained(cache)
    policy = Policy(settings.supported_languages, packs.require(settings.supported_languages), model)
    print(evaluation.cross_validate(reader.corpus_text(), cache, args.folds).report())
    for name, file in (
        ("dev set (frozen)", "dev_set.jsonl"),
        ("paraphrase set", "paraphrase_set.jsonl"),
        ("paraphrase translations", "paraphrase_translations.jsonl"),
    ):
        path = DATA / file
        if not path.exists():
            print(f"{name}: {file} missing")
            continue
        cases = evaluation.load_cases(path)
        groups = {"": cases} if name != "paraphrase translations" else {
            lang: [c for c in cases if c.language == lang] for lang in sorted({c.language for c in cases})
        }  # fmt: skip
        for lang, group in groups.items():
            result = await evaluation.score(policy, f"{name} {lang}".strip(), group)
            print(result.report())
            if args.misses:
                print("  misses:\n    " + "\n    ".join(result.misses()))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
