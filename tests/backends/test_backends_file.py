"""FileStorage: hashed traversal-proof names, atomic writes, the header, purging."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import trio

from backends import FileStorage, StorageError
from backends._file_format import CorruptEntryError, decode_header, encode_header
from tests.backends.harness import ManualClock

HOSTILE_KEYS = [
    "../../escape",
    "/etc/passwd",
    "a/../../b",
    "..",
    ".",
    "C:\\windows\\x",
    "\x00",
    "~",
    "dir/",
]


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


class TestNames:
    def test_entry_path_is_the_sha256_of_the_key(self, tmp_path: Path) -> None:
        """A key's file is root/<first two hex digits>/<64 hex digits of its SHA-256>."""
        store = FileStorage(tmp_path / "root")
        digest = hashlib.sha256(b"user:42").hexdigest()
        assert store.entry_path("user:42") == tmp_path / "root" / digest[:2] / digest

    async def test_hostile_keys_stay_inside_the_root(self, tmp_path: Path) -> None:
        """Keys made of path syntax write only hex-named files under the root."""
        root = tmp_path / "root"
        store = FileStorage(root)
        await store.set_many({key: key.encode() for key in HOSTILE_KEYS})
        written = files_under(tmp_path)
        assert len(written) == len(HOSTILE_KEYS)
        for path in written:
            relative = path.relative_to(root)
            assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{64}", relative.as_posix())
            assert relative.name.startswith(relative.parent.name)
        assert await store.get_many(HOSTILE_KEYS) == [key.encode() for key in HOSTILE_KEYS]

    async def test_a_file_holding_another_key_is_a_miss(self, tmp_path: Path) -> None:
        """A file whose header names a different key (a hash collision) reads as absent."""
        store = FileStorage(tmp_path)
        await store.set("a", b"value of a")
        target = store.entry_path("b")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.entry_path("a").read_bytes())
        assert await store.get("b") is None
        assert await store.get("a") == b"value of a"


class TestFormat:
    async def test_file_holds_key_expiry_and_value(self, tmp_path: Path) -> None:
        """The entry file is the header (key, wall-clock expiry) then the value."""
        clock = ManualClock(now=1000.0)
        store = FileStorage(tmp_path, clock=clock)
        await store.set("k", b"payload", ttl=30)
        data = store.entry_path("k").read_bytes()
        header = decode_header(data)
        assert (header.key, header.deadline) == ("k", 1030.0)
        assert data[header.value_offset :] == b"payload"
        assert data == encode_header("k", 1030.0) + b"payload"

    def test_no_expiry_round_trips(self) -> None:
        """A header without expiry decodes to deadline None."""
        header = decode_header(encode_header("ключ", None) + b"v")
        assert (header.key, header.deadline) == ("ключ", None)

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", r"^0 bytes is shorter than the header$"),
            (b"XXXX" + bytes(14), r"^magic is b'XXXX', not b'SQFS'$"),
            (b"SQFS\x02" + bytes(13), r"^version is 2, not 1$"),
            (
                encode_header("long key", None)[:-2],
                r"^key of 8 bytes runs past the end of the file$",
            ),
        ],
    )
    def test_corrupt_headers(self, data: bytes, reason: str) -> None:
        """Each way a header can be wrong is a CorruptEntryError saying which."""
        with pytest.raises(CorruptEntryError) as caught:
            decode_header(data)
        assert re.match(reason, caught.value.reason)

    async def test_corrupt_file_is_a_storage_error(self, tmp_path: Path) -> None:
        """Reading a file that does not parse raises StorageError with the cause chained."""
        store = FileStorage(tmp_path)
        path = store.entry_path("k")
        path.parent.mkdir(parents=True)
        path.write_bytes(b"garbage")
        with pytest.raises(
            StorageError, match=r"^entry file .* is corrupt: 7 bytes is shorter"
        ) as caught:
            await store.get("k")
        assert isinstance(caught.value.__cause__, CorruptEntryError)
        assert (caught.value.backend, caught.value.operation) == ("FileStorage", "get")

    async def test_corrupt_file_is_healed_by_a_write(self, tmp_path: Path) -> None:
        """Setting the key again replaces a corrupt file."""
        store = FileStorage(tmp_path)
        path = store.entry_path("k")
        path.parent.mkdir(parents=True)
        path.write_bytes(b"garbage")
        await store.set("k", b"good")
        assert await store.get("k") == b"good"

    async def test_delete_prefix_leaves_unreadable_files(self, tmp_path: Path) -> None:
        """delete_prefix skips a file it cannot parse instead of failing."""
        store = FileStorage(tmp_path)
        await store.set("p:1", b"1")
        path = store.entry_path("p:2")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"garbage")
        assert await store.delete_prefix("p:") == 1
        assert path.read_bytes() == b"garbage"


class TestConcurrentWriters:
    async def test_many_writers_one_key_always_parse(self, tmp_path: Path) -> None:
        """Forty tasks writing one key while others read: every read is one whole value."""
        store = FileStorage(tmp_path)
        values = {bytes([index]) * 200_000 for index in range(40)}
        seen: list[bytes | None] = []

        async def write(value: bytes) -> None:
            for _ in range(3):
                await store.set("shared", value)

        async def read() -> None:
            for _ in range(10):
                seen.append(await store.get("shared"))

        async with trio.open_nursery() as nursery:
            for value in values:
                nursery.start_soon(write, value)
            for _ in range(10):
                nursery.start_soon(read)

        assert len(seen) == 100
        assert all(value is None or value in values for value in seen)
        assert await store.get("shared") in values
        assert [path.name for path in files_under(tmp_path)] == [store.entry_path("shared").name]


class TestPurgeAndPersistence:
    async def test_purge_expired_removes_only_expired(self, tmp_path: Path) -> None:
        """purge_expired deletes expired files, keeps live ones, and counts."""
        clock = ManualClock()
        store = FileStorage(tmp_path, clock=clock)
        await store.set_many({"a": b"1", "b": b"2"}, ttl=10)
        await store.set("c", b"3", ttl=100)
        await store.set("d", b"4")
        await clock.advance(11)
        assert await store.purge_expired() == 2
        assert len(files_under(tmp_path)) == 2
        assert await store.get_many(["a", "b", "c", "d"]) == [None, None, b"3", b"4"]

    async def test_entries_survive_a_new_instance(self, tmp_path: Path) -> None:
        """A second FileStorage on the same directory reads what the first wrote."""
        clock = ManualClock()
        async with FileStorage(tmp_path, clock=clock) as first:
            await first.set("k", b"v", ttl=60)
        async with FileStorage(tmp_path, clock=clock) as second:
            assert await second.get_with_ttl("k") == (b"v", 60.0)

    async def test_missing_directory_reads_as_empty(self, tmp_path: Path) -> None:
        """Before the first write the directory does not exist; reads miss, deletes succeed."""
        store = FileStorage(tmp_path / "not" / "yet")
        assert await store.get("k") is None
        assert await store.delete_prefix("") == 0
        await store.delete("k")
        assert not (tmp_path / "not").exists()

    async def test_root_that_is_a_file_is_a_storage_error(self, tmp_path: Path) -> None:
        """A root path that is a regular file makes writes fail with StorageError."""
        root = tmp_path / "occupied"
        root.write_bytes(b"")
        store = FileStorage(root)
        with pytest.raises(StorageError, match=r"^FileStorage\.set failed: ") as caught:
            await store.set("k", b"v")
        assert isinstance(caught.value.__cause__, OSError)

    async def test_durable_writes(self, tmp_path: Path) -> None:
        """durable=True writes the same bytes (after fsync)."""
        store = FileStorage(tmp_path, durable=True)
        await store.set("k", b"v")
        assert await store.get("k") == b"v"
        assert os.listdir(store.entry_path("k").parent) == [store.entry_path("k").name]
