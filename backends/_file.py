"""A byte store with one file per key in a local directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import final

import trio

from ._base import ByteStore, Reading
from ._errors import StorageError
from ._expiry import expiry_deadline, is_expired, remaining_ttl
from ._file_format import HEADER, CorruptEntryError, EntryHeader, decode_header, encode_header
from ._file_format import key_length as header_key_length
from ._validation import check_prefix

# Entry files read per worker-thread call while scanning.
_SCAN_PAGE = 256


@final
class FileStorage(ByteStore):
    """One file per key under ``path``; entries survive the process.

    A key's file is named by the SHA-256 of the key (``path/ab/abcdef…``), so
    any text is a safe key: ``..``, slashes and NUL never reach the file
    system as path parts.  The file holds the original key (``delete_prefix``
    needs it; a read checks it) and the expiry as wall-clock time, read from
    ``clock`` because entries outlive the process and trio's clock.

    Writes go to a unique temporary file in the same directory, then
    ``os.replace`` it onto the entry's name: readers and concurrent writers of
    the same key see a whole old or a whole new file, never a mix, and the
    last write wins.  Without ``durable``, the old file is unlinked just before
    the rename (much faster on ext4, see ``_write_one``), so a read that
    races an overwrite may also find no entry: a miss, as after an expiry.
    Expired files stay until :meth:`purge_expired`, or until overwritten or
    deleted; reads treat them as absent.

    File I/O runs in worker threads (``trio.to_thread.run_sync``).  Cancelled,
    an operation whose thread already started runs to completion before
    ``Cancelled`` is raised, so a cancelled ``set`` or ``delete`` may have
    taken effect.

    Args:
        path: the directory; created on the first write.
        clock: wall-clock seconds since the epoch; tests inject their own.
        durable: ``fsync`` each file and its directory before a write returns,
            so entries survive a power loss, at the cost of a disk flush per
            write; an overwrite then replaces the old file in one step.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        durable: bool = False,
    ) -> None:
        self._root = Path(path)
        self._clock = clock
        self._durable = durable

    @property
    def path(self) -> Path:
        """The directory that holds the entries."""
        return self._root

    def entry_path(self, key: str) -> Path:
        """Return the file that holds ``key``'s entry (it may not exist)."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self._root / digest[:2] / digest

    async def purge_expired(self) -> int:
        """Remove every expired entry file; return how many were removed.

        An entry rewritten while it is being purged is kept.

        Raises:
            StorageClosedError: the store was closed.
            StorageError: the file system failed; the cause is chained.
        """
        self._check_open("purge_expired")
        with self._translating("purge_expired"):
            return await trio.to_thread.run_sync(self._purge_expired_sync)

    async def scan(self, prefix: str = "") -> AsyncIterator[tuple[str, bytes, float | None]]:
        """Yield ``(key, value, seconds left)`` of each live entry whose key starts with ``prefix``.

        Entries come in no particular order (the order of their files), read a
        page of files at a time; an entry written or removed during the walk
        may or may not be seen.  Seconds left is ``None`` for an entry without
        expiry.  Expired entries, files that are not entries of this store and
        temporary files of writes in progress are skipped.

        Args:
            prefix: the start of every key wanted (``""``: every key).

        Raises:
            TypeError: ``prefix`` is not a ``str``.
            ValueError: ``prefix`` holds a lone surrogate.
            StorageClosedError: the store was closed.
            StorageError: the file system failed; the cause is chained.
        """
        checked = check_prefix(prefix)
        self._check_open("scan")
        with self._translating("scan"):
            paths = await trio.to_thread.run_sync(lambda: list(self._entry_files()))
        for start in range(0, len(paths), _SCAN_PAGE):
            self._check_open("scan")
            with self._translating("scan"):
                page = await trio.to_thread.run_sync(
                    self._scan_sync, paths[start : start + _SCAN_PAGE], checked
                )
            for entry in page:
                yield entry

    async def _read(self, keys: list[str]) -> list[Reading]:
        return await trio.to_thread.run_sync(self._read_sync, keys)

    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        await trio.to_thread.run_sync(self._write_sync, items, ttl)

    async def _delete(self, key: str) -> None:
        await trio.to_thread.run_sync(self._delete_sync, key)

    async def _delete_prefix(self, prefix: str) -> int:
        return await trio.to_thread.run_sync(self._delete_prefix_sync, prefix)

    async def _close(self) -> None:
        await trio.lowlevel.checkpoint()

    # The rest runs in worker threads.

    def _read_sync(self, keys: list[str]) -> list[Reading]:
        now = self._clock()
        return [self._read_one(key, now) for key in keys]

    def _read_one(self, key: str, now: float) -> Reading:
        path = self.entry_path(key)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return (None, None)
        header = self._decode(path, data)
        # A different key in the file means a SHA-256 collision: a miss, not a wrong value.
        if header.key != key or is_expired(header.deadline, now):
            return (None, None)
        return (data[header.value_offset :], remaining_ttl(header.deadline, now))

    def _write_sync(self, items: dict[str, bytes], ttl: float | None) -> None:
        deadline = expiry_deadline(self._clock(), ttl)
        for key, value in items.items():
            self._write_one(key, value, deadline)

    def _write_one(self, key: str, value: bytes, deadline: float | None) -> None:
        path = self.entry_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            with open(temporary, "xb") as file:
                file.write(encode_header(key, deadline))
                file.write(value)
                if self._durable:
                    file.flush()
                    os.fsync(file.fileno())
            if not self._durable:
                # ext4 (auto_da_alloc) flushes a file renamed over an existing one to
                # disk, which makes an overwrite ~15x slower (1 ms instead of 60 µs
                # here); renaming onto a free name is not flushed.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        if self._durable:
            _fsync_directory(path.parent)

    def _delete_sync(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.entry_path(key))

    def _delete_prefix_sync(self, prefix: str) -> int:
        removed = 0
        for path in self._entry_files():
            try:
                header = _read_header(path)
            except (FileNotFoundError, CorruptEntryError):
                # Gone meanwhile, or not ours to interpret: a read of its key reports it.
                continue
            if header.key.startswith(prefix):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed += 1
        return removed

    def _scan_sync(self, paths: list[Path], prefix: str) -> list[tuple[str, bytes, float | None]]:
        now = self._clock()
        entries: list[tuple[str, bytes, float | None]] = []
        for path in paths:
            try:
                with open(path, "rb") as file:
                    head = file.read(HEADER.size)
                    header = decode_header(head + file.read(header_key_length(head)))
                    if not header.key.startswith(prefix) or is_expired(header.deadline, now):
                        continue
                    value = file.read()
            except (FileNotFoundError, CorruptEntryError):
                # Gone meanwhile, or not ours to interpret (as in delete_prefix).
                continue
            entries.append((header.key, value, remaining_ttl(header.deadline, now)))
        return entries

    def _purge_expired_sync(self) -> int:
        now = self._clock()
        removed = 0
        for path in self._entry_files():
            try:
                expired = is_expired(_read_header(path).deadline, now)
            except (FileNotFoundError, CorruptEntryError):
                continue
            if expired and _remove_if_still_expired(path, now):
                removed += 1
        return removed

    def _entry_files(self) -> Iterator[Path]:
        try:
            fanouts = [entry.path for entry in os.scandir(self._root) if _is_fanout(entry)]
        except FileNotFoundError:
            return
        for fanout in fanouts:
            try:
                entries = list(os.scandir(fanout))
            except FileNotFoundError:
                continue
            for entry in entries:
                # Dot files are temporary files of writes in progress (or of crashed ones).
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    yield Path(entry.path)

    def _decode(self, path: Path, data: bytes) -> EntryHeader:
        try:
            return decode_header(data)
        except CorruptEntryError as exc:
            raise StorageError(
                f"entry file {path} is corrupt: {exc.reason}",
                backend=type(self).__name__,
                operation="get",
            ) from exc


def _is_fanout(entry: os.DirEntry[str]) -> bool:
    return len(entry.name) == 2 and entry.is_dir(follow_symlinks=False)


def _read_header(path: Path) -> EntryHeader:
    with open(path, "rb") as file:
        head = file.read(HEADER.size)
        return decode_header(head + file.read(header_key_length(head)))


def _remove_if_still_expired(path: Path, now: float) -> bool:
    """Remove the entry at ``path`` unless a writer replaced it since it was found expired."""
    # Taking the file away first makes the second look atomic with the removal:
    # whatever is checked is what gets removed.
    claimed = path.with_name(f".{path.name}.{secrets.token_hex(8)}.purge")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return False
    try:
        if is_expired(_read_header(claimed).deadline, now):
            return True
        # A fresh entry landed between the two looks: put it back, unless an even
        # newer write took its place meanwhile (link refuses to overwrite).
        with contextlib.suppress(FileExistsError):
            os.link(claimed, path)
        return False
    finally:
        os.unlink(claimed)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
