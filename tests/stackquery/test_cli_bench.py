"""``stackquery bench``: a folder of small fake benchmark scripts, run as the real ones are."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from stackquery.__main__ import main
from tests.stackquery.cli_process import REPO_ROOT, run_cli

FAST = '''\
"""A benchmark that takes --rounds and prints a table."""
import argparse

import stackquery


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    print("operation  median")
    for index in range(rounds):
        print(f"round {index}  {index + 1}.0 us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''

FIXED = '''\
"""A benchmark with its own number of rounds and no options."""
import sys


def main() -> None:
    print("fixed rounds: 3", sys.argv[1:])


if __name__ == "__main__":
    main()
'''

NEEDS_EXTRA = '''\
"""A benchmark whose extra is not installed."""
import stackquery_no_such_extra


def main() -> None:
    print("never runs")
'''

BROKEN = '''\
"""A benchmark that misses its target."""
import sys


def main() -> int:
    print("verdict: FAIL")
    return 3


if __name__ == "__main__":
    sys.exit(main())
'''


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    """A checkout-like ``tests/benchmarks`` folder of fake scripts."""
    folder = tmp_path / "tests" / "benchmarks"
    folder.mkdir(parents=True)
    scripts = {
        "fast.py": FAST,
        "fixed.py": FIXED,
        "needs_extra.py": NEEDS_EXTRA,
        "broken.py": BROKEN,
        "_shared.py": "raise RuntimeError('a helper module is not a benchmark')\n",
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
    return folder


def test_runs_each_benchmark_and_prints_its_output(bench_dir: Path) -> None:
    """Each script runs once with --rounds where it takes it; a missed target makes exit 1."""
    result = run_cli("bench", "--dir", str(bench_dir), "--rounds", "2", "--plain")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "round 0  1.0 us\nround 1  2.0 us\n" in out
    assert "round 2" not in out
    assert "fixed rounds: 3 []\n" in out
    assert "verdict: FAIL\n(broken.py missed: ran; target missed: verdict: FAIL)\n" in out
    assert "never runs" not in out
    headings = [line.split(" (")[0] for line in out.splitlines() if line.startswith("== ")]
    assert headings == ["== broken.py", "== fast.py", "== fixed.py"]
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines()[-4:]]
    assert [row[:3] for row in rows] == [
        ["broken", "missed", "ran; target missed: verdict: FAIL"],
        ["fast", "ok", "2 rounds"],
        ["fixed", "ok", "its own rounds"],
        ["needs_extra", "skipped", "needs stackquery_no_such_extra (not installed)"],
    ]
    assert [re.fullmatch(r"\d+\.\d", row[3]) is not None for row in rows] == [True] * 4
    assert result.stderr.splitlines() == [
        "[1/3] broken.py ...",
        "[2/3] fast.py ...",
        "[3/3] fixed.py ...",
    ]


def test_named_benchmark_only(bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names pick the scripts to run; all went well: exit 0."""
    assert main(["bench", "fast.py", "--dir", str(bench_dir), "--rounds", "1", "--plain"]) == 0
    captured = capsys.readouterr()
    assert "round 0  1.0 us\n" in captured.out
    assert "round 1" not in captured.out
    assert captured.out.splitlines()[-3:-1] == [
        "BENCHMARK  RESULT  DETAIL   SECONDS",
        "---------  ------  -------  -------",
    ]
    assert re.split(r"\s{2,}", captured.out.splitlines()[-1])[:3] == ["fast", "ok", "1 round"]
    assert captured.err == "[1/1] fast.py ...\n"


def test_list(bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--list names every script, whether it takes --rounds and what it lacks; runs none."""
    assert main(["bench", "--list", "--dir", str(bench_dir), "--plain"]) == 0
    assert capsys.readouterr().out == textwrap.dedent(
        """\
        BENCHMARK    --ROUNDS  MISSING
        -----------  --------  ------------------------
        broken       no        -
        fast         yes       -
        fixed        no        -
        needs_extra  no        stackquery_no_such_extra
        """
    )


def test_checkout_benchmarks_are_found_from_the_repository_root(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --dir, the checkout's tests/benchmarks is used."""
    monkeypatch.chdir(REPO_ROOT)
    assert main(["bench", "--list", "--plain"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    expected = sorted(path.stem for path in (REPO_ROOT / "tests" / "benchmarks").glob("[!_]*.py"))
    assert names == expected


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that does not exist: exit 2 and a message naming it."""
    assert main(["bench", "--dir", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == (
        f"stackquery bench: error: no benchmarks folder at {tmp_path / 'nowhere'}\n"
    )


def test_unknown_name(bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name that is not a script in the folder: exit 2, the known names listed."""
    assert main(["bench", "fastest", "--dir", str(bench_dir)]) == 2
    assert capsys.readouterr().err == (
        "stackquery bench: error: no benchmark named 'fastest' "
        "(there are: broken, fast, fixed, needs_extra)\n"
    )
