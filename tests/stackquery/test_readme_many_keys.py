"""The README's snippets of client-wide operations, serial mutations and typed JSON run as shown."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

REPO_ROOT = Path(__file__).resolve().parents[2]


def readme_snippet(name: str) -> tuple[str, str]:
    """The snippet marked ``<!-- NAME snippet ... -->`` and the output the README says it prints."""
    text = (REPO_ROOT / "README.md").read_text()
    mark = f"<!-- {name} snippet: run by tests/stackquery/test_readme_many_keys.py -->\n```python\n"
    code, rest = text.split(mark, 1)[1].split("```", 1)
    printed = rest.split("prints\n\n```\n", 1)[1].split("```", 1)[0]
    return code, printed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["client-wide", "serial-mutations", "typed-json"])
async def test_the_snippet_prints_what_the_readme_says(name: str, tmp_path: Path) -> None:
    """Run as a newcomer would, in a fresh interpreter: exit 0, nothing on stderr, that output."""
    code, printed = readme_snippet(name)
    with trio.fail_after(60.0):
        done = await trio.run_process(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    assert (done.returncode, done.stderr.decode()) == (0, "")
    assert done.stdout.decode() == printed
