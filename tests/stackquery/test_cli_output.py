"""The command line's output, in-process: tables and progress with and without rich."""

from __future__ import annotations

import io
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from backends import SQLiteStorage
from stackquery import serializers
from stackquery.__main__ import main
from stackquery._entry import CorruptEntryError, pack_entry, unpack_entry
from stackquery.cli._inspect import format_duration
from stackquery.cli._output import (
    Column,
    PlainProgress,
    RichProgress,
    format_plain_table,
    load_rich,
    open_progress,
    print_table,
)
from stackquery.cli._stores import RawEntry, describe_entry, invalidated_copy, read_entry
from tests.stackquery.cli_process import fill

COLUMNS = [Column("KEY"), Column("SIZE", "right")]
ROWS = [['["user",1]', "71"], ["[bold]x[/bold]", "1234"]]
PLAIN = textwrap.dedent(
    """\
    KEY             SIZE
    --------------  ----
    ["user",1]        71
    [bold]x[/bold]  1234"""
)


@pytest.fixture
def without_rich(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make ``import rich`` fail, as it does when the ``cli`` extra is not installed."""
    for name in [name for name in sys.modules if name == "rich" or name.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "rich", None)
    assert load_rich() is None
    yield


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class TestTables:
    def test_plain_table_aligns_columns(self) -> None:
        """Left columns are padded right, right columns padded left, under a dashed rule."""
        assert format_plain_table(COLUMNS, ROWS) == PLAIN

    def test_without_rich_the_table_is_plain(self, without_rich: None) -> None:
        """With rich missing, print_table prints the plain table."""
        stream = io.StringIO()
        print_table(COLUMNS, ROWS, stream=stream)
        assert stream.getvalue() == PLAIN + "\n"

    def test_plain_flag_skips_rich(self) -> None:
        """plain=True prints the plain table though rich is installed."""
        assert load_rich() is not None
        stream = io.StringIO()
        print_table(COLUMNS, ROWS, stream=stream, plain=True)
        assert stream.getvalue() == PLAIN + "\n"

    def test_rich_table_shows_cells_verbatim(self) -> None:
        """rich draws the table; text that looks like markup is printed as written."""
        stream = io.StringIO()
        print_table(COLUMNS, ROWS, stream=stream)
        lines = [line.rstrip() for line in stream.getvalue().splitlines()]
        assert lines == [
            "KEY              SIZE",
            "─────────────────────",
            '["user",1]         71',
            "[bold]x[/bold]   1234",
        ]

    @pytest.mark.parametrize("plain", [True, False])
    def test_row_of_the_wrong_length(self, plain: bool) -> None:
        """A row without one cell per column is a ValueError naming the counts."""
        with pytest.raises(ValueError, match=r"^a row has 1 cells for 2 columns: \['x'\]$"):
            print_table(COLUMNS, [["x"]], stream=io.StringIO(), plain=plain)


class TestProgress:
    def test_plain_progress_without_rich(self, without_rich: None) -> None:
        """Without rich: one line per step on the status stream, output on out."""
        out, status = io.StringIO(), FakeTerminal()
        with open_progress(2, out=out, status_stream=status) as progress:
            assert isinstance(progress, PlainProgress)
            progress.start_step("a.py")
            progress.set_status("round 1")
            progress.emit("table a")
            progress.finish_step()
            progress.start_step("b.py")
            progress.finish_step()
        assert status.getvalue() == "[1/2] a.py ...\n[2/2] b.py ...\n"
        assert out.getvalue() == "table a\n"

    def test_rich_progress_needs_a_terminal(self) -> None:
        """With rich but a status stream that is not a terminal, progress is plain."""
        with open_progress(1, out=io.StringIO(), status_stream=io.StringIO()) as progress:
            assert isinstance(progress, PlainProgress)

    def test_rich_progress_on_a_terminal(self) -> None:
        """On a terminal, a rich bar counts the steps; emitted text goes to out whole."""
        out, status = io.StringIO(), FakeTerminal()
        with open_progress(2, out=out, status_stream=status) as progress:
            assert isinstance(progress, RichProgress)
            progress.start_step("a.py")
            progress.set_status("round 1 of 3")
            progress.emit("table a")
            progress.finish_step()
            task = progress.progress.tasks[0]
            assert (task.completed, task.total, task.description) == (1, 2, "a.py")
            assert task.fields == {"status": "round 1 of 3"}
        assert out.getvalue() == "table a\n"


class TestCommandsWithoutRich:
    def test_inspect_prints_the_plain_table(
        self, tmp_path: Path, without_rich: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """inspect without rich prints what --plain prints."""
        path = tmp_path / "cache.db"

        async def write() -> None:
            async with SQLiteStorage(path) as store:
                await fill(store, {("user", 1): "ada", ("user", 2): "bob"})

        trio.run(write)
        assert main(["inspect", "--sqlite", str(path)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "KEY", "AGE", "TTL", "SIZE", "SERIALIZER", "INVALIDATED", "STATUS"
        ]  # fmt: skip
        assert [len(dashes) for dashes in lines[1].split("  ")][4:] == [10, 11, 6]
        assert [line.split()[0] for line in lines[2:4]] == ['["user",1]', '["user",2]']
        assert lines[-1] == (
            f"2 keys under 'sq:' in the SQLite store {path}: 2 ok, 0 lease, 0 foreign, 0 corrupt"
        )


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.0, "0.0s"),
            (0.04, "0.0s"),
            (9.96, "10.0s"),
            (10.0, "10s"),
            (59.9, "59s"),
            (60.0, "1m00s"),
            (185.0, "3m05s"),
            (3600.0, "1h00m"),
            (86399.0, "23h59m"),
            (86400.0 * 2 + 3600 * 4, "2d04h"),
            (-75.0, "-1m15s"),
        ],
    )
    def test_two_largest_units(self, seconds: float, text: str) -> None:
        """Durations read in their two largest units; negatives keep the sign."""
        assert format_duration(seconds) == text


class TestEntries:
    SIGNED = serializers.pickle(key=b"k" * 32)

    def test_binary_entry_is_read_without_its_serializer(self) -> None:
        """A signed-pickle entry's envelope is read; its payload stays bytes."""
        raw = pack_entry({"a": 1}, data_updated_at=12.5, serializer=self.SIGNED)
        entry, serializer = read_entry(raw)
        assert (entry.serializer, entry.data_updated_at, entry.invalidated) == (
            self.SIGNED.name,
            12.5,
            False,
        )
        assert serializer.name == self.SIGNED.name
        assert isinstance(entry.value, bytes)

    def test_invalidated_copy_keeps_the_payload(self) -> None:
        """Rewritten, a binary entry decodes with its own serializer to the same value."""
        raw = pack_entry({"a": 1}, data_updated_at=12.5, serializer=self.SIGNED)
        copy = invalidated_copy(raw)
        assert copy is not None
        assert len(copy) == len(raw)
        stored = unpack_entry(copy, self.SIGNED)
        assert (stored.value, stored.data_updated_at, stored.invalidated) == ({"a": 1}, 12.5, True)
        assert invalidated_copy(copy) is None

    def test_invalidated_copy_of_a_json_entry(self) -> None:
        """A JSON entry stays a text entry, flag set, value and time kept."""
        raw = pack_entry([1, "x"], data_updated_at=3.0, serializer=serializers.json)
        copy = invalidated_copy(raw)
        assert copy == b'{"sq":1,"s":"json","t":3.0,"i":true,"d":[1,"x"]}'

    @pytest.mark.parametrize(
        ("raw", "status", "problem"),
        [
            (b"", "corrupt", "truncated): entry is empty"),
            (b"\xffSQ\x01", "corrupt", "truncated): entry is shorter than its header"),
            (b"hello", "foreign", "foreign): not a stackquery entry"),
            (b'{"sq":2}', "corrupt", "unsupported-version): format version 2, expected 1"),
        ],
    )
    def test_damaged_values(self, raw: bytes, status: str, problem: str) -> None:
        """Values that are not entries are classified, never raised."""
        info = describe_entry(RawEntry('sq:["k"]', raw, None), "sq:")
        assert (info.key, info.status, info.problem) == (
            '["k"]',
            status,
            "corrupt entry (" + problem,
        )

    @pytest.mark.parametrize(
        ("rest", "status"),
        [
            ('["k", 1]', "foreign"),  # not canonical: a client never writes the space
            ('{"k": 1}', "foreign"),
            ('lease:["k"]', "lease"),
            ("lease:nope", "foreign"),
        ],
    )
    def test_key_names(self, rest: str, status: str) -> None:
        """Only the canonical JSON of a key is a key; fleet lease keys are recognized."""
        raw = pack_entry(1, data_updated_at=1.0, serializer=serializers.json)
        info = describe_entry(RawEntry("sq:" + rest, raw, None), "sq:")
        assert (info.key, info.status) == (None, status)

    def test_corrupt_entry_error_is_raised_by_read_entry(self) -> None:
        """read_entry raises CorruptEntryError for bytes that are not an entry."""
        with pytest.raises(CorruptEntryError, match=r"^corrupt entry \(foreign\): "):
            read_entry(b"nope")
