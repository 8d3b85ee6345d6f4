"""The README's batch loader snippet runs as a newcomer would run it, and prints what it says."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

REPO_ROOT = Path(__file__).resolve().parents[2]
SNIPPET_MARK = (
    "<!-- batch loader snippet: run by tests/stackquery/test_batch_readme.py -->\n```python\n"
)


def readme_block(after: str) -> str:
    """The text of the fenced block that follows ``after`` in the README."""
    text = (REPO_ROOT / "README.md").read_text()
    return text.split(after, 1)[1].split("```", 1)[0]


@pytest.mark.slow
async def test_the_batch_loader_snippet_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """Run in a subprocess: its output is the README's "prints" block, line for line."""
    snippet = readme_block(SNIPPET_MARK)
    expected = readme_block(snippet + "```\n\nprints\n\n```\n")
    with trio.fail_after(60.0):
        done = await trio.run_process(
            [sys.executable, "-c", snippet],
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    assert (done.returncode, done.stderr.decode()) == (0, "")
    assert done.stdout.decode() == expected.lstrip("\n")
