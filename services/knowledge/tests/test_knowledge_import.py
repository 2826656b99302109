"""`python -m fte_knowledge import PATH`: idempotent by slug and content hash, bad rows rejected."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fte_knowledge.server import Knowledge
from fte_stack.services import SERVICES, StackInfo
from knowledge_helpers import run_cli  # type: ignore[import-not-found]


def _write(folder: Path, slug: str, title: str, body: str) -> None:
    (folder / "account").mkdir(parents=True, exist_ok=True)
    (folder / "account" / f"{slug}.md").write_text(
        f"---\ntitle: {title}\ntags: [login]\nlanguage: en\nurl: https://help.example/{slug}\n---\n{body}",
        encoding="utf-8",
    )


async def test_markdown_import_is_idempotent(knowledge: Knowledge, tmp_path: Path) -> None:
    dsn = knowledge.settings.database_url.get_secret_value()
    for i in range(3):
        _write(tmp_path, f"doc-{i}", f"Doc {i}", f"# Doc {i}\n\nAbout thing {i}.\n")
    cli = (sys.executable, "-m", "fte_knowledge", "import", str(tmp_path))
    analyzed = "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = 'knowledge' AND relname = 'chunks'"
    before = await knowledge.kb.store.pool.fetchval(analyzed)

    code, out, err = await run_cli(dsn, *cli)
    assert (code, out.strip()) == (0, "created 3, updated 0, unchanged 0, rejected 0"), err
    # A bulk load leaves planner statistics behind, so search plans (and common words) fit the data.
    after = await knowledge.kb.store.pool.fetchval(analyzed)
    assert after is not None
    assert after != before
    assert "3/3" in err  # the progress bar
    stored = await knowledge.kb.store.get("doc-1")
    assert stored is not None
    assert stored.fields.category == "account"
    assert stored.fields.url == "https://help.example/doc-1"

    code, out, _ = await run_cli(dsn, *cli, "--no-progress")
    assert (code, out.strip()) == (0, "created 0, updated 0, unchanged 3, rejected 0")

    _write(tmp_path, "doc-1", "Doc 1", "# Doc 1\n\nAbout thing 1, now with more detail.\n")
    code, out, _ = await run_cli(dsn, *cli, "--no-progress")
    assert (code, out.strip()) == (0, "created 0, updated 1, unchanged 2, rejected 0")
    updated = await knowledge.kb.store.get("doc-1")
    assert updated is not None
    assert updated.version == 2


async def test_jsonl_import_rejects_bad_rows_and_keeps_good_ones(knowledge: Knowledge, tmp_path: Path) -> None:
    dsn = knowledge.settings.database_url.get_secret_value()
    source = tmp_path / "kb.jsonl"
    rows = [
        {"slug": "good-one", "title": "Good", "body": "# Good\n\nText.\n", "category": "api"},
        {"slug": "Bad Slug", "title": "Bad", "body": "text"},
        {"slug": "no-body", "title": "No body"},
    ]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n", encoding="utf-8")
    code, out, err = await run_cli(dsn, sys.executable, "-m", "fte_knowledge", "import", str(source), "--no-progress")
    assert code == 1
    assert out.strip() == "created 1, updated 0, unchanged 0, rejected 3"
    assert "kb.jsonl:4" in err
    assert "article.slug" in err
    assert "article.body" in err
    assert await knowledge.kb.store.get("good-one") is not None

    code, _, err = await run_cli(dsn, sys.executable, "-m", "fte_knowledge", "import", str(tmp_path / "missing"))
    assert code == 2
    assert "no such file" in err


def test_the_stack_loads_the_sample_knowledge_base(tmp_path: Path) -> None:
    spec = next(s for s in SERVICES if s.name == "knowledge")
    info = StackInfo(
        state_dir=tmp_path,
        database_url="postgresql://x@127.0.0.1:1/x",
        kafka_bootstrap="127.0.0.1:1",
        kafka_idempotence=False,
        envoy_target="127.0.0.1:1",
        tokens={},
        ports={},
    )
    (command,) = spec.after_start(info)
    assert command[1:4] == ["-m", "fte_knowledge", "import"]
    assert Path(command[4]).is_dir()
    assert Path(command[4]).name == "sample_kb"
