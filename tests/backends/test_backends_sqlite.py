"""SQLiteStorage: persistence, two instances on one file, transactions, range deletes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from backends import SQLiteStorage, StorageClosedError, StorageError
from backends._sqlite import prefix_upper_bound
from tests.backends.harness import ManualClock


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM stackquery_entries").fetchone()
    return int(count)


class TestPersistence:
    async def test_survives_reopen(self, tmp_path: Path) -> None:
        """Values and their expiry are there after closing and reopening the file."""
        clock = ManualClock()
        path = tmp_path / "cache.db"
        async with SQLiteStorage(path, clock=clock) as first:
            await first.set("k", b"v", ttl=60)
            await first.set("forever", b"w")
        await clock.advance(20)
        async with SQLiteStorage(path, clock=clock) as second:
            assert await second.get_many_with_ttl(["k", "forever"]) == [
                (b"v", 40.0),
                (b"w", None),
            ]

    async def test_wal_mode(self, tmp_path: Path) -> None:
        """The database file is in WAL mode once a store has used it."""
        path = tmp_path / "cache.db"
        async with SQLiteStorage(path) as store:
            await store.set("k", b"v")
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    async def test_missing_directory_is_created(self, tmp_path: Path) -> None:
        """The database's directory is made on first use."""
        async with SQLiteStorage(tmp_path / "a" / "b" / "cache.db") as store:
            await store.set("k", b"v")
            assert await store.get("k") == b"v"


class TestTwoInstances:
    async def test_concurrent_writers_and_readers_on_one_file(self, tmp_path: Path) -> None:
        """Two stores on one file, 100 concurrent writes and reads: all land, all visible."""
        path = tmp_path / "shared.db"
        async with SQLiteStorage(path) as first, SQLiteStorage(path) as second:

            async def write(store: SQLiteStorage, index: int) -> None:
                await store.set(f"key:{index}", str(index).encode())
                await store.set_many({"shared": str(index).encode(), f"batch:{index}": b"b"})
                await store.get("shared")

            async with trio.open_nursery() as nursery:
                for index in range(50):
                    nursery.start_soon(write, first, index)
                    nursery.start_soon(write, second, 50 + index)

            keys = [f"key:{index}" for index in range(100)]
            expected = [str(index).encode() for index in range(100)]
            assert await first.get_many(keys) == expected
            assert await second.get_many(keys) == expected
            assert await first.get("shared") == await second.get("shared")
            assert await second.delete_prefix("batch:") == 100
        assert count_rows(path) == 101

    async def test_instances_opening_a_new_file_at_once_all_work(self, tmp_path: Path) -> None:
        """Four stores opening one new file at once all write: none fails its switch to WAL.

        Found in CI: two stores both saw a new file in rollback mode and both
        switched it to WAL; SQLite failed the second switch with "database is
        locked" at once, without its busy timeout (about 7 files in 100 failed).
        """
        for index in range(60):
            path = tmp_path / f"new-{index}.db"
            stores = [SQLiteStorage(path) for _ in range(4)]
            try:
                async with trio.open_nursery() as nursery:
                    for number, store in enumerate(stores):
                        nursery.start_soon(store.set, f"k{number}", b"v")
            finally:
                for store in stores:
                    await store.aclose()
            assert count_rows(path) == 4
            with sqlite3.connect(path) as connection:
                assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


class TestTransactions:
    async def test_set_many_is_all_or_nothing(self, tmp_path: Path) -> None:
        """A batch that fails on one row stores none of its rows."""
        path = tmp_path / "cache.db"
        async with SQLiteStorage(path) as store:
            await store.set("before", b"kept")
            with sqlite3.connect(path) as connection:
                connection.execute(
                    "CREATE TRIGGER poison BEFORE INSERT ON stackquery_entries "
                    "WHEN NEW.key = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
            with pytest.raises(StorageError, match=r"^SQLiteStorage\.set_many failed: ") as caught:
                await store.set_many({"a": b"1", "poison": b"2", "b": b"3"})
            assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
            assert await store.get_many(["a", "poison", "b", "before"]) == [
                None,
                None,
                None,
                b"kept",
            ]
            await store.set("after", b"ok")
            assert await store.get("after") == b"ok"

    async def test_expired_row_is_deleted_when_read(self, tmp_path: Path) -> None:
        """Reading an expired row deletes it; a live row stays."""
        clock = ManualClock()
        path = tmp_path / "cache.db"
        async with SQLiteStorage(path, clock=clock) as store:
            await store.set("old", b"1", ttl=5)
            await store.set("new", b"2", ttl=50)
            await clock.advance(6)
            assert await store.get_many(["old", "new"]) == [None, b"2"]
            assert count_rows(path) == 1

    async def test_purge_expired(self, tmp_path: Path) -> None:
        """purge_expired deletes every expired row and counts them."""
        clock = ManualClock()
        path = tmp_path / "cache.db"
        async with SQLiteStorage(path, clock=clock) as store:
            await store.set_many({"a": b"1", "b": b"2"}, ttl=5)
            await store.set("c", b"3")
            await clock.advance(5)
            assert await store.purge_expired() == 2
            assert count_rows(path) == 1


class TestPrefixRange:
    @pytest.mark.parametrize(
        ("prefix", "bound"),
        [
            ("", None),
            ("ab", "ac"),
            ("a%", "a&"),
            ("a\U0010ffff", "b"),
            ("\U0010ffff\U0010ffff", None),
            ("a\ud7ff", "a\ue000"),
            ("é", "ê"),
        ],
    )
    def test_prefix_upper_bound(self, prefix: str, bound: str | None) -> None:
        """The bound is the prefix with its last incrementable code point incremented."""
        assert prefix_upper_bound(prefix) == bound

    async def test_delete_prefix_uses_the_index(self, tmp_path: Path) -> None:
        """delete_prefix's query is a range search on the primary key, not a scan."""
        async with SQLiteStorage(tmp_path / "cache.db") as store:
            await store.set("k", b"v")
        with sqlite3.connect(tmp_path / "cache.db") as connection:
            plan = connection.execute(
                "EXPLAIN QUERY PLAN DELETE FROM stackquery_entries WHERE key >= ? AND key < ?",
                ("a", "b"),
            ).fetchall()
        assert [row[3] for row in plan] == [
            "SEARCH stackquery_entries USING INDEX sqlite_autoindex_stackquery_entries_1"
            " (key>? AND key<?)"
        ]


class TestFailures:
    async def test_path_that_is_a_directory(self, tmp_path: Path) -> None:
        """A database path that is a directory fails with StorageError, cause chained."""
        store = SQLiteStorage(tmp_path)
        with pytest.raises(StorageError, match=r"^SQLiteStorage\.get failed: ") as caught:
            await store.get("k")
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)

    async def test_close_while_waiting(self, tmp_path: Path) -> None:
        """A call that was waiting for the connection when aclose came finds the store closed."""
        store = SQLiteStorage(tmp_path / "cache.db")
        await store.set("k", b"v")
        outcome: list[BaseException] = []

        async def waiting_get() -> None:
            try:
                await store.get("k")
            except StorageClosedError as exc:
                outcome.append(exc)

        # Hold the connection's one slot so both calls queue: the get first.
        async with trio.open_nursery() as nursery, store._limiter:
            nursery.start_soon(waiting_get)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.aclose)
            await trio.testing.wait_all_tasks_blocked()
        assert [str(exc) for exc in outcome] == ["SQLiteStorage is closed"]
