"""What the command line prints: tables and a progress display, through rich or as plain text.

rich comes with the ``cli`` extra (``pip install 'stackquery[cli]'``).  Without
it, or with ``--plain``, tables are aligned plain text and progress is one line
per step on stderr; the information shown is the same.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, Final, Literal, Protocol, TextIO

import attrs
import orjson

#: Exit code: the command did its job and found nothing wrong.
EXIT_OK: Final = 0
#: Exit code: the command ran to the end and found problems (see the epilog).
EXIT_PROBLEMS: Final = 1
#: Exit code: bad usage, or the store or folder could not be reached or opened.
EXIT_USAGE: Final = 2

EXIT_CODES_EPILOG: Final = """\
exit codes:
  0  done, nothing wrong found
  1  done, but problems were found: inspect saw foreign or corrupt entries
     under the prefix, invalidate left unreadable entries alone, a key prefix
     matched nothing (--attach, --sqlite, --file), a refetch waited on failed,
     a benchmark failed or missed its target
  2  bad usage, or the store or process could not be reached or opened (a
     wrong path, an unreachable Redis URL, nothing at an --attach socket, a
     missing benchmarks folder)
"""


class CommandError(Exception):
    """A command cannot go on; the message is for the user, the code for the shell.

    Attributes:
        exit_code: the process exit code to end with (:data:`EXIT_USAGE` unless said).
    """

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@attrs.frozen
class Column:
    """One column of a table."""

    title: str
    """The header text."""
    align: Literal["left", "right"] = "left"
    """Right for numbers, so that their digits line up."""


def load_rich() -> ModuleType | None:
    """Return the ``rich`` package, or ``None`` when it is not installed."""
    try:
        return importlib.import_module("rich")
    except ImportError:
        return None


def print_json(document: Any, *, stream: TextIO) -> None:
    """Print ``document`` as indented JSON (what ``--json`` prints)."""
    stream.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def format_plain_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """Return ``rows`` as aligned plain text under a header and a rule.

    Raises:
        ValueError: a row does not have one cell per column.
    """
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row!r}")
    widths = [
        max([len(column.title), *(len(row[index]) for row in rows)])
        for index, column in enumerate(columns)
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if column.align == "right" else cell.ljust(width)
            for cell, width, column in zip(cells, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    header = line([column.title for column in columns])
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([header, rule, *(line(row) for row in rows)])


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    stream: TextIO,
    plain: bool = False,
) -> None:
    """Print a table to ``stream``: a rich table when rich is installed, else plain text.

    Cells are shown as they are (never read as rich markup, so a key such as
    ``["user"]`` prints as written).

    Args:
        columns: the columns, in order.
        rows: one sequence of cell texts per row.
        stream: where to print.
        plain: plain text even when rich is installed.

    Raises:
        ValueError: a row does not have one cell per column.
    """
    rich = None if plain else load_rich()
    if rich is None:
        print(format_plain_table(columns, rows), file=stream)
        return
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row!r}")
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column.title, justify=column.align, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    Console(file=stream, highlight=False).print(table)


def format_duration(seconds: float) -> str:
    """Return ``seconds`` in the largest two units that fit: ``42s``, ``3m05s``, ``2d04h``.

    A negative duration (a clock that ran behind the writer's) keeps its sign.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def key_text(key: Any) -> str:
    """A key as the command line shows it: its canonical JSON, as ``inspect`` shows a store's."""
    return orjson.dumps(key).decode() if isinstance(key, list) else str(key)


def describe_prefixes(prefixes: Sequence[dict[str, Any]]) -> str:
    """``["user"] (120 keys), ["team"] (1 key)``: what a reply that matched nothing found."""
    if not prefixes:
        return "it holds no keys"
    found = ", ".join(
        f"{key_text(item['prefix'])} ({item['keys']} key{'' if item['keys'] == 1 else 's'})"
        for item in prefixes
    )
    return f"prefixes there: {found}"


class Progress(Protocol):
    """A display of a job of several steps."""

    def start_step(self, label: str) -> None:
        """Show that the step named ``label`` began."""
        ...

    def set_status(self, text: str) -> None:
        """Show what the current step is doing (a display may ignore it)."""
        ...

    def finish_step(self) -> None:
        """Count the current step as done."""
        ...

    def emit(self, text: str) -> None:
        """Write ``text`` (and a newline) to the output stream, clear of the display."""
        ...


@attrs.define(eq=False)
class PlainProgress:
    """Progress as one line per step on ``status_stream``; output on ``out``."""

    total: int
    out: TextIO
    status_stream: TextIO
    _done: int = 0
    _started_at: float = 0.0

    def start_step(self, label: str) -> None:
        self._started_at = time.monotonic()
        print(f"[{self._done + 1}/{self.total}] {label} ...", file=self.status_stream, flush=True)

    def set_status(self, text: str) -> None:
        # One line per step: a line per status change would bury the output.
        pass

    def finish_step(self) -> None:
        self._done += 1

    def emit(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@attrs.define(eq=False)
class RichProgress:
    """A rich progress bar on ``status_stream`` (a terminal); output on ``out``."""

    progress: Any
    """The ``rich.progress.Progress``."""
    task: Any
    """Its one task's id."""
    out: TextIO

    def start_step(self, label: str) -> None:
        self.progress.update(self.task, description=label, status="")

    def set_status(self, text: str) -> None:
        self.progress.update(self.task, status=text[-60:])

    def finish_step(self) -> None:
        self.progress.advance(self.task)

    def emit(self, text: str) -> None:
        # The bar is taken down while the text is written, so that output sent to
        # the same terminal (or to a pipe) never mixes with the bar's redraws.
        self.progress.stop()
        print(text, file=self.out, flush=True)
        self.progress.start()


@contextlib.contextmanager
def open_progress(
    total: int, *, out: TextIO, status_stream: TextIO, plain: bool = False
) -> Iterator[Progress]:
    """Show the progress of ``total`` steps until the block ends.

    A rich bar when rich is installed and ``status_stream`` is a terminal;
    otherwise one plain line per step on ``status_stream``.

    Args:
        total: how many steps the job has.
        out: where :meth:`Progress.emit` writes.
        status_stream: where the progress is shown.
        plain: plain lines even when rich is installed.
    """
    rich = None if plain else load_rich()
    if rich is not None:
        from rich.console import Console

        console = Console(file=status_stream)
        if console.is_terminal:
            from rich import progress as rich_progress

            bar = rich_progress.Progress(
                rich_progress.SpinnerColumn(),
                rich_progress.TextColumn("{task.description}"),
                rich_progress.BarColumn(),
                rich_progress.MofNCompleteColumn(),
                rich_progress.TimeElapsedColumn(),
                rich_progress.TextColumn("{task.fields[status]}", markup=False),
                console=console,
                transient=True,
            )
            task = bar.add_task("", total=total, status="")
            bar.start()
            try:
                yield RichProgress(bar, task, out)
            finally:
                bar.stop()
            return
    yield PlainProgress(total, out, status_stream)
