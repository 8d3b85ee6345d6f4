"""The embedded persistent byte store: one SQLite file in WAL mode."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple, final

import trio

from ._base import ByteStore, Reading
from ._expiry import expiry_deadline, is_expired, remaining_ttl
from ._validation import check_prefix

if TYPE_CHECKING:
    # Imported by the first connection instead: a program without this store skips it.
    import sqlite3

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_TABLE = "stackquery_entries"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL
)
"""
# Well under SQLite's limit on bound parameters (32766 since 3.32).
_KEYS_PER_QUERY = 500


@final
class SQLiteStorage(ByteStore):
    """Entries in one SQLite database file, shared safely by threads and processes.

    The database runs in WAL mode, so readers do not block the writer, and
    several ``SQLiteStorage`` instances (in one process or many) can use the
    same file; a writer waits up to ``timeout`` seconds for another's lock.
    Batch writes are one transaction.  Expiry is wall-clock time from
    ``clock``, because entries outlive the process; an expired row is deleted
    when a read finds it, and :meth:`purge_expired` deletes them all.

    Each instance owns one connection, opened on first use; its calls run in
    worker threads one at a time (``trio.to_thread.run_sync`` behind a
    one-slot ``trio.CapacityLimiter``), so the connection is never used by two
    threads at once.  Cancelled, an operation whose thread already started runs
    to completion before ``Cancelled`` is raised, so a cancelled ``set`` or
    ``delete`` may have taken effect.

    Args:
        path: the database file (its directory is created if missing), or
            ``":memory:"`` for a private in-memory database.
        clock: wall-clock seconds since the epoch; tests inject their own.
        timeout: seconds to wait for another connection's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        self._timeout = timeout
        self._connection: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def purge_expired(self) -> int:
        """Delete every expired row; return how many were deleted.

        Raises:
            StorageClosedError: the store was closed.
            StorageError: SQLite failed; the cause is chained.
        """
        self._check_open("purge_expired")
        with self._translating("purge_expired"):
            return await self._run(self._purge_expired_sync)

    async def scan(self, prefix: str = "") -> AsyncIterator[tuple[str, bytes, float | None]]:
        """Yield ``(key, value, seconds left)`` of each live entry whose key starts with ``prefix``.

        Entries come in key order (UTF-8 byte order), read a page of rows at a
        time, so a store of any size can be walked; an entry written or removed
        during the walk may or may not be seen.  Seconds left is ``None`` for an
        entry without expiry; expired rows are skipped, not deleted.

        Args:
            prefix: the start of every key wanted (``""``: every key).

        Raises:
            TypeError: ``prefix`` is not a ``str``.
            ValueError: ``prefix`` holds a lone surrogate.
            StorageClosedError: the store was closed.
            StorageError: SQLite failed; the cause is chained.
        """
        checked = check_prefix(prefix)
        self._check_open("scan")
        after: str | None = None
        while True:
            with self._translating("scan"):
                page = await self._run(self._scan_sync, checked, after)
            for entry in page:
                yield entry
            if len(page) < _KEYS_PER_QUERY:
                return
            after = page[-1][0]

    async def _read(self, keys: list[str]) -> list[Reading]:
        return await self._run(self._read_sync, keys)

    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        await self._run(self._write_sync, items, ttl)

    async def _delete(self, key: str) -> None:
        await self._run(self._delete_sync, key)

    async def _delete_prefix(self, prefix: str) -> int:
        return await self._run(self._delete_prefix_sync, prefix)

    async def _close(self) -> None:
        await trio.to_thread.run_sync(self._close_sync, limiter=self._limiter)

    async def _run(self, function: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    # The rest runs in worker threads, one at a time.

    def _open(self, operation: str) -> sqlite3.Connection:
        # Checked again here: aclose may have run while this call waited for the limiter.
        self._check_open(operation)
        if self._connection is None:
            import sqlite3

            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                _use_wal(connection, self._timeout)
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute(_SCHEMA)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _read_sync(self, keys: list[str]) -> list[Reading]:
        connection = self._open("get")
        now = self._clock()
        rows: dict[str, tuple[bytes, float | None]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _KEYS_PER_QUERY):
            chunk = unique[start : start + _KEYS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, value, expires_at FROM {_TABLE} WHERE key IN ({marks})"
            for key, value, deadline in connection.execute(query, chunk):
                rows[key] = (value, deadline)
        readings: list[Reading] = []
        expired: list[str] = []
        for key in keys:
            row = rows.get(key)
            if row is None or is_expired(row[1], now):
                if row is not None:
                    expired.append(key)
                readings.append((None, None))
            else:
                readings.append((row[0], remaining_ttl(row[1], now)))
        if expired:
            self._delete_expired(connection, expired, now)
        return readings

    def _delete_expired(self, connection: sqlite3.Connection, keys: list[str], now: float) -> None:
        import sqlite3  # loaded by _open already

        # The condition keeps a row that a writer refreshed since it was read.
        try:
            with _immediate_transaction(connection):
                connection.executemany(
                    f"DELETE FROM {_TABLE} WHERE key = ? AND expires_at <= ?",
                    [(key, now) for key in keys],
                )
        except sqlite3.OperationalError:
            # Busy: the cleanup is an optimisation; purge_expired or a later read does it.
            pass

    def _write_sync(self, items: dict[str, bytes], ttl: float | None) -> None:
        connection = self._open("set")
        deadline = expiry_deadline(self._clock(), ttl)
        with _immediate_transaction(connection):
            connection.executemany(
                f"INSERT OR REPLACE INTO {_TABLE} (key, value, expires_at) VALUES (?, ?, ?)",
                [(key, value, deadline) for key, value in items.items()],
            )

    def _delete_sync(self, key: str) -> None:
        self._open("delete").execute(f"DELETE FROM {_TABLE} WHERE key = ?", (key,))

    def _delete_prefix_sync(self, prefix: str) -> int:
        connection = self._open("delete_prefix")
        upper = prefix_upper_bound(prefix)
        if upper is None:
            cursor = connection.execute(f"DELETE FROM {_TABLE} WHERE key >= ?", (prefix,))
        else:
            cursor = connection.execute(
                f"DELETE FROM {_TABLE} WHERE key >= ? AND key < ?", (prefix, upper)
            )
        return cursor.rowcount

    def _scan_sync(self, prefix: str, after: str | None) -> list[tuple[str, bytes, float | None]]:
        connection = self._open("scan")
        now = self._clock()
        # The range test on the primary key, as in delete_prefix, keeps the walk on the index.
        conditions = ["key >= ?", "(expires_at IS NULL OR expires_at > ?)"]
        arguments: list[object] = [prefix, now]
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            conditions.append("key < ?")
            arguments.append(upper)
        if after is not None:
            conditions.append("key > ?")
            arguments.append(after)
        query = (
            f"SELECT key, value, expires_at FROM {_TABLE} WHERE {' AND '.join(conditions)} "
            f"ORDER BY key LIMIT {_KEYS_PER_QUERY}"
        )
        return [
            (key, _as_bytes(value), remaining_ttl(deadline, now))
            for key, value, deadline in connection.execute(query, arguments)
        ]

    def _purge_expired_sync(self) -> int:
        connection = self._open("purge_expired")
        cursor = connection.execute(f"DELETE FROM {_TABLE} WHERE expires_at <= ?", (self._clock(),))
        return cursor.rowcount

    def _close_sync(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _as_bytes(value: object) -> bytes:
    # A row written by hand may hold TEXT (or a number); a listing shows it as bytes.
    return value if isinstance(value, bytes) else str(value).encode()


def prefix_upper_bound(prefix: str) -> str | None:
    """Return the least string above every string that starts with ``prefix``.

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so
    ``prefix <= key < bound`` selects exactly the keys starting with
    ``prefix`` and can use the primary-key index (a ``LIKE`` cannot, and
    would need its wildcards escaped).  ``None``: no bound (the prefix is
    empty or all U+10FFFF).
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = last + 1
            # Keys never hold surrogates (they are checked), so skip over them.
            if 0xD800 <= following <= 0xDFFF:
                following = 0xE000
            return "".join(chars) + chr(following)
    return None


def _use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switch the database file to WAL, unless another connection has; in a worker thread.

    WAL is a property of the file, and switching takes its exclusive lock.  Two
    instances opening a new file at once both see it in rollback mode and both
    switch: SQLite fails the second switch with "database is locked" at once,
    without waiting ``timeout`` as it does for a write, so the switch is tried
    again here (the mode read afresh each time) for up to ``timeout`` seconds.

    Raises:
        sqlite3.OperationalError: the file stayed locked for ``timeout`` seconds,
            or any other error of SQLite's.
    """
    import sqlite3  # loaded by _open already

    deadline = time.monotonic() + timeout
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)  # a worker thread's wait, as SQLite's own busy handler waits


@contextmanager
def _immediate_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: two connections that both read and
    # then try to write would otherwise deadlock into SQLITE_BUSY.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
