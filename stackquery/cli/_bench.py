"""``stackquery bench``: run the benchmark scripts of a checkout, one after another.

The benchmarks are the scripts in ``tests/benchmarks/`` of a stackquery
checkout (a developer tool: an installed package has none).  Each runs as
its own process, ``python SCRIPT [--rounds N]``, from the checkout's root with
the checkout on ``PYTHONPATH``; its output (its tables) is printed when it
ends, and a summary table closes the run.  One that does not take
``--rounds`` runs its own number of rounds.  Each ends as one of:

* ``ok``: it ran and met its targets (or has none);
* ``missed``: it ran, and its target was missed: it printed a line starting
  with ``verdict: FAIL`` or ending with ``MISSED`` (whatever its exit status);
* ``failed``: it crashed or exited non-zero without such a verdict;
* ``skipped``: it needs a module that is not installed (an extra such as
  ``opentelemetry-sdk``): an import at the top of the script, checked before it
  runs, or a ``ModuleNotFoundError`` it died of.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

import attrs
import trio

from ._output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Column,
    CommandError,
    Progress,
    open_progress,
    print_table,
)

_BENCHMARKS_DIR = Path("tests") / "benchmarks"
_MISSING_MODULE = re.compile(r"^ModuleNotFoundError: No module named '([\w.]+)'$")
_VERDICT_MISSED = re.compile(r"^\s*(verdict: FAIL\b.*|.*\bMISSED)\s*$")
Outcome = Literal["ok", "missed", "failed", "skipped"]
# Where ``import stackquery`` found this package: a checkout's root when used in place.
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Benchmark:
    """One benchmark script."""

    path: Path
    takes_rounds: bool
    """Whether the script has a ``--rounds`` option."""
    missing: tuple[str, ...]
    """Modules it imports at the top that are not installed."""

    @property
    def name(self) -> str:
        """The script's name without ``.py``."""
        return self.path.stem


@attrs.frozen
class BenchResult:
    """How one benchmark went."""

    benchmark: Benchmark
    outcome: Outcome
    detail: str
    """The rounds run, the target missed, the exit status of a failed run, or what a
    skipped one needs."""
    seconds: float
    output: str
    """What the script printed (stdout and stderr, in order)."""


def find_benchmarks_dir(given: str | None) -> Path:
    """Return the benchmarks folder: ``given``, else ``tests/benchmarks`` of the checkout.

    Without ``given``, the folder is looked for under the current directory,
    then next to the ``stackquery`` package (a checkout used in place).

    Raises:
        CommandError: the folder does not exist.
    """
    if given is not None:
        path = Path(given)
        if not path.is_dir():
            raise CommandError(f"no benchmarks folder at {given}")
        return path
    for root in (Path.cwd(), _PACKAGE_ROOT):
        if (root / _BENCHMARKS_DIR).is_dir():
            return root / _BENCHMARKS_DIR
    raise CommandError(
        f"no {_BENCHMARKS_DIR} folder here or next to the stackquery package: bench runs "
        "the benchmark scripts of a stackquery checkout (run it from the repository root, "
        "or pass --dir)"
    )


def discover(directory: Path) -> list[Benchmark]:
    """Return the benchmark scripts in ``directory``, by name.

    Every ``*.py`` counts except names that start with ``_`` and ``conftest.py``.

    Raises:
        CommandError: a script cannot be read or parsed.
    """
    benchmarks = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_") or path.name == "conftest.py":
            continue
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError) as exc:
            raise CommandError(f"cannot read the benchmark {path}: {exc}") from None
        root = directory.parent.parent
        benchmarks.append(Benchmark(path, _takes_rounds(tree), _missing_modules(tree, root)))
    return benchmarks


def _takes_rounds(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Constant) and node.value == "--rounds" for node in ast.walk(tree)
    )


def _missing_modules(tree: ast.Module, root: Path) -> tuple[str, ...]:
    # Only imports at the top of the module: one inside a function is the
    # script's own business (an optional peer it can do without).
    wanted: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            wanted += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            wanted.append(node.module)
    missing = []
    for module in dict.fromkeys(wanted):
        top = module.partition(".")[0]
        if (root / top).is_dir() or (root / f"{top}.py").is_file():
            continue  # the checkout's own packages (stackquery, backends, tests)
        if not _installed(module):
            missing.append(module)
    return tuple(missing)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def select(benchmarks: list[Benchmark], names: Sequence[str]) -> list[Benchmark]:
    """Return the benchmarks named (all when ``names`` is empty), in the order given.

    Raises:
        CommandError: a name is not a benchmark in the folder.
    """
    if not names:
        return benchmarks
    by_name = {benchmark.name: benchmark for benchmark in benchmarks}
    chosen = []
    for name in names:
        stem = name.removesuffix(".py")
        if stem not in by_name:
            known = ", ".join(by_name) or "none"
            raise CommandError(f"no benchmark named {name!r} (there are: {known})")
        chosen.append(by_name[stem])
    return chosen


def command_line(benchmark: Benchmark, rounds: int | None) -> list[str]:
    """Return the command that runs ``benchmark``."""
    command = [sys.executable, str(benchmark.path)]
    if rounds is not None and benchmark.takes_rounds:
        command += ["--rounds", str(rounds)]
    return command


async def run_benchmark(
    benchmark: Benchmark, rounds: int | None, progress: Progress
) -> BenchResult:
    """Run one benchmark to its end, showing its latest output line as its status."""
    root = benchmark.path.parent.parent.parent
    paths = [str(root), str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path for path in paths if path),
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    output = bytearray()
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                command_line(benchmark, rounds),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                check=False,
            )
        )
        assert process.stdout is not None
        async for chunk in process.stdout:
            output += chunk
            lines = output.decode(errors="replace").rstrip().rsplit("\n", 1)
            progress.set_status(lines[-1].strip())
    seconds = time.monotonic() - started
    text = output.decode(errors="replace").rstrip("\n")
    if rounds is not None and benchmark.takes_rounds:
        ran = "1 round" if rounds == 1 else f"{rounds} rounds"
    else:
        ran = "its own rounds"
    assert process.returncode is not None  # the nursery waited for it
    outcome, detail = classify(process.returncode, text, ran)
    return BenchResult(benchmark, outcome, detail, seconds, text)


def classify(returncode: int, output: str, ran: str) -> tuple[Outcome, str]:
    """How a run ended, from its exit status and output, and the detail the summary shows.

    Args:
        returncode: the script's exit status.
        output: what it printed.
        ran: the rounds it ran, in words (the detail of a run that went well).
    """
    lines = output.splitlines()
    if returncode != 0 and lines:
        missing = _MISSING_MODULE.match(lines[-1].strip())
        if missing:
            return "skipped", f"needs {missing[1]} (not installed)"
    verdicts = [line.strip() for line in lines if _VERDICT_MISSED.match(line)]
    if verdicts:
        return "missed", f"ran; target missed: {verdicts[-1][:80]}"
    if returncode != 0:
        return "failed", f"exit status {returncode}"
    return "ok", ran


def skipped(benchmark: Benchmark) -> BenchResult:
    """Return the result of a benchmark that cannot run here."""
    needs = ", ".join(benchmark.missing)
    return BenchResult(benchmark, "skipped", f"needs {needs} (not installed)", 0.0, "")


async def run_all(
    benchmarks: Sequence[Benchmark], rounds: int | None, progress: Progress
) -> list[BenchResult]:
    """Run the benchmarks one after another; print each one's output as it ends."""
    results = []
    for benchmark in benchmarks:
        if benchmark.missing:
            results.append(skipped(benchmark))
            continue
        progress.start_step(benchmark.path.name)
        result = await run_benchmark(benchmark, rounds, progress)
        progress.finish_step()
        text = result.output
        if result.outcome != "ok":
            text += f"\n({benchmark.path.name} {result.outcome}: {result.detail})"
        progress.emit(f"== {benchmark.path.name} ({result.seconds:.1f}s) ==\n{text}\n")
        results.append(result)
    return results


def list_benchmarks(benchmarks: Sequence[Benchmark], *, out: TextIO, plain: bool) -> None:
    """Print the benchmarks found, whether they take ``--rounds``, and what they lack."""
    rows = [
        [
            benchmark.name,
            "yes" if benchmark.takes_rounds else "no",
            ", ".join(benchmark.missing) or "-",
        ]
        for benchmark in benchmarks
    ]
    print_table(
        [Column("BENCHMARK"), Column("--ROUNDS"), Column("MISSING")], rows, stream=out, plain=plain
    )


def run_bench(
    names: Sequence[str],
    *,
    rounds: int | None,
    directory: str | None,
    list_only: bool = False,
    plain: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run ``stackquery bench``; return the exit code.

    Args:
        names: the benchmarks to run (script names, ``.py`` optional); empty: all.
        rounds: passed as ``--rounds`` to the scripts that take it; ``None``:
            each script's own default.
        directory: the benchmarks folder; ``None``: ``tests/benchmarks`` of the checkout.
        list_only: list the benchmarks instead of running them.
        plain: plain text even when rich is installed.
        out: where the benchmarks' output and the summary go.
        err: where the progress is shown.

    Returns:
        ``EXIT_PROBLEMS`` when a benchmark failed or missed its target, else
        ``EXIT_OK`` (skipped ones are not failures: the summary says what they need).

    Raises:
        CommandError: no benchmarks folder, or a name that is not a benchmark in it.
    """
    folder = find_benchmarks_dir(directory)
    chosen = select(discover(folder), names)
    if list_only:
        list_benchmarks(chosen, out=out, plain=plain)
        return EXIT_OK
    if not chosen:
        print(f"no benchmark scripts in {folder}", file=out)
        return EXIT_OK
    runnable = sum(1 for benchmark in chosen if not benchmark.missing)
    with open_progress(runnable, out=out, status_stream=err, plain=plain) as progress:
        results = trio.run(run_all, chosen, rounds, progress)
    rows = [
        [result.benchmark.name, result.outcome, result.detail, f"{result.seconds:.1f}"]
        for result in results
    ]
    columns = [Column("BENCHMARK"), Column("RESULT"), Column("DETAIL"), Column("SECONDS", "right")]
    print_table(columns, rows, stream=out, plain=plain)
    problems = sum(1 for result in results if result.outcome in ("failed", "missed"))
    return EXIT_PROBLEMS if problems else EXIT_OK
