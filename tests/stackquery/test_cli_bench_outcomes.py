"""``stackquery bench`` tells apart a crash, a missed target and a module that is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stackquery.__main__ import main
from stackquery.cli._bench import classify

SCRIPTS = {
    "crashes.py": "raise RuntimeError('a bug in the benchmark')\n",
    "misses.py": "print('target batch <= 2.0x: 3.10x MISSED')\n",
    "needs_late.py": "def main():\n    import stackquery_absent_peer\n\nmain()\n",
    "passes.py": "print('verdict: PASS: 1 call (target [1])')\n",
}


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tests" / "benchmarks"
    folder.mkdir(parents=True)
    for name, text in SCRIPTS.items():
        (folder / name).write_text(text)
    return folder


def test_each_outcome_is_named_and_only_failures_and_misses_make_exit_1(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """crash: failed; MISSED line with exit 0: missed; an import at run time: skipped."""
    assert main(["bench", "--dir", str(bench_dir), "--plain"]) == 1
    rows = [re.split(r"\s{2,}", line)[:3] for line in capsys.readouterr().out.splitlines()[-4:]]
    assert rows == [
        ["crashes", "failed", "exit status 1"],
        ["misses", "missed", "ran; target missed: target batch <= 2.0x: 3.10x MISSED"],
        ["needs_late", "skipped", "needs stackquery_absent_peer (not installed)"],
        ["passes", "ok", "its own rounds"],
    ]


def test_skipped_and_passed_alone_make_exit_0(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module missing is not a failure: the summary says what it needs."""
    assert main(["bench", "needs_late", "passes", "--dir", str(bench_dir), "--plain"]) == 0
    out = capsys.readouterr().out
    assert "(needs_late.py skipped: needs stackquery_absent_peer (not installed))" in out


@pytest.mark.parametrize(
    ("returncode", "output", "expected"),
    [
        (0, "rows\nverdict: PASS: fine", ("ok", "3 rounds")),
        (
            1,
            "rows\nverdict: FAIL: 2.8x (target <= 2x)",
            ("missed", "ran; target missed: verdict: FAIL: 2.8x (target <= 2x)"),
        ),
        (
            0,
            "target single <= 1.5x: 14x  MISSED",
            ("missed", "ran; target missed: target single <= 1.5x: 14x  MISSED"),
        ),
        (2, "Traceback ...\nValueError: boom", ("failed", "exit status 2")),
        (
            1,
            "Traceback ...\nModuleNotFoundError: No module named 'advanced_caching'",
            ("skipped", "needs advanced_caching (not installed)"),
        ),
        (-9, "", ("failed", "exit status -9")),
    ],
)
def test_classify(returncode: int, output: str, expected: tuple[str, str]) -> None:
    """The outcome and detail of a run from its exit status and output."""
    assert classify(returncode, output, "3 rounds") == expected
