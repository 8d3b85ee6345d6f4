"""``scan(prefix)``: the listing of the local persistent stores (SQLite and files)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backends import FileStorage, SQLiteStorage, StorageClosedError
from tests.backends.harness import ManualClock


@pytest.fixture(params=["sqlite", "file"])
async def store_and_clock(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Any, ManualClock]]:
    """A SQLite or file store on a manual wall clock."""
    clock = ManualClock()
    store: Any
    if request.param == "sqlite":
        store = SQLiteStorage(tmp_path / "cache.db", clock=clock)
    else:
        store = FileStorage(tmp_path / "files", clock=clock)
    async with store:
        yield store, clock


async def scanned(store: Any, prefix: str = "") -> list[tuple[str, bytes, float | None]]:
    """Every entry the scan yields, sorted by key."""
    return sorted([entry async for entry in store.scan(prefix)])


class TestScan:
    async def test_lists_entries_under_the_prefix(self, store_and_clock: Any) -> None:
        """Only keys starting with the prefix are listed, with their values and TTLs left."""
        store, clock = store_and_clock
        await store.set("sq:a", b"1")
        await store.set("sq:b", b"2", ttl=10)
        await store.set("other:c", b"3")
        await clock.advance(4)
        assert await scanned(store, "sq:") == [("sq:a", b"1", None), ("sq:b", b"2", 6.0)]

    async def test_empty_prefix_lists_everything(self, store_and_clock: Any) -> None:
        """The empty prefix lists every key."""
        store, _ = store_and_clock
        await store.set_many({"x": b"1", "y": b"2"})
        assert await scanned(store) == [("x", b"1", None), ("y", b"2", None)]

    async def test_expired_entries_are_skipped(self, store_and_clock: Any) -> None:
        """An entry past its TTL is not listed."""
        store, clock = store_and_clock
        await store.set("gone", b"1", ttl=5)
        await store.set("kept", b"2")
        await clock.advance(5)
        assert await scanned(store) == [("kept", b"2", None)]

    async def test_empty_store(self, store_and_clock: Any) -> None:
        """A store with nothing in it lists nothing."""
        store, _ = store_and_clock
        assert await scanned(store) == []

    async def test_closed_store_refuses(self, store_and_clock: Any) -> None:
        """Scanning a closed store raises StorageClosedError."""
        store, _ = store_and_clock
        await store.aclose()
        with pytest.raises(StorageClosedError, match=r"^\w+Storage is closed$"):
            await scanned(store)

    async def test_bad_prefix(self, store_and_clock: Any) -> None:
        """A prefix that is not a str is a TypeError before any I/O."""
        store, _ = store_and_clock
        with pytest.raises(TypeError, match=r"^prefix must be str, not bytes$"):
            await scanned(store, b"sq:")  # type: ignore[arg-type]


async def test_sqlite_scan_pages_through_many_rows(tmp_path: Path) -> None:
    """More rows than one page (500) are all listed once, in key order."""
    async with SQLiteStorage(tmp_path / "cache.db") as store:
        await store.set_many({f"k{index:04d}": b"v" for index in range(1234)})
        keys = [key async for key, _, _ in store.scan("k")]
    assert keys == [f"k{index:04d}" for index in range(1234)]


async def test_sqlite_scan_lists_text_rows_as_bytes(tmp_path: Path) -> None:
    """A row another program wrote as TEXT is listed as its UTF-8 bytes."""
    path = tmp_path / "cache.db"
    async with SQLiteStorage(path) as store:
        await store.set("ours", b"1")
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("INSERT INTO stackquery_entries VALUES ('theirs', 'text', NULL)")
    connection.close()
    async with SQLiteStorage(path) as store:
        assert await scanned(store) == [("ours", b"1", None), ("theirs", b"text", None)]


async def test_file_scan_skips_files_that_are_not_entries(tmp_path: Path) -> None:
    """A stray file in a fan-out directory is skipped, not an error."""
    async with FileStorage(tmp_path) as store:
        await store.set("ours", b"1")
        (tmp_path / "ab").mkdir(exist_ok=True)
        (tmp_path / "ab" / "stray").write_bytes(b"not an entry")
        assert await scanned(store) == [("ours", b"1", None)]
