"""The labeled retrieval set (tests/data/retrieval_set.jsonl) against the sample knowledge base,
loaded the way `make run` loads it, searched through gRPC with the offline model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fte.knowledge.v1 import knowledge_service_pb2 as ks
from fte_knowledge.server import Knowledge
from fte_knowledge.sources import read_source
from fte_stack.services import SERVICES, StackInfo
from knowledge_helpers import Client, run_cli  # type: ignore[import-not-found]

DATA = Path(__file__).resolve().parent / "data" / "retrieval_set.jsonl"
TOP3_FLOOR = 0.90


async def test_retrieval_hit_rates(
    knowledge: Knowledge, client_for: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = knowledge.settings.database_url.get_secret_value()
    spec = next(s for s in SERVICES if s.name == "knowledge")
    info = StackInfo(tmp_path, dsn, "", False, "", {}, {})
    (command,) = spec.after_start(info)
    assert command[0] == sys.executable
    code, out, err = await run_cli(dsn, *command)
    assert code == 0, err
    assert out.startswith("created ")
    # A second start skips every unchanged article.
    code, again, _ = await run_cli(dsn, *command)
    assert code == 0
    articles, _ = read_source(Path(command[4]))
    assert again.strip() == f"created 0, updated 0, unchanged {len(articles)}, rejected 0"

    cases = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(cases) >= 60
    agent = client_for("agent")
    top1 = top3 = 0
    misses: list[str] = []
    for case in cases:
        response = await agent.SearchKnowledge(ks.SearchKnowledgeRequest(query=case["question"], top_k=3))
        found = [r.article.removeprefix("articles/") for r in response.results]
        top1 += found[:1] == [case["slug"]]
        top3 += case["slug"] in found
        if case["slug"] not in found:
            misses.append(f"  {case['question']!r}: expected {case['slug']}, got {found}")
    rate1, rate3 = top1 / len(cases), top3 / len(cases)
    with capsys.disabled():  # the hit rates are the point of this test: always show them
        print(f"\nretrieval set: {len(cases)} questions, top-1 {rate1:.3f}, top-3 {rate3:.3f}")
        print("\n".join(misses))
    assert rate3 >= TOP3_FLOOR
