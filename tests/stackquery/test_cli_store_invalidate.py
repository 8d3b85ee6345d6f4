"""``stackquery invalidate --sqlite/--file``: entries flagged in place, read back by clients."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

import stackquery as sq
from backends import FileStorage, SQLiteStorage
from stackquery.__main__ import main
from tests.stackquery.cli_process import fill, run_cli

VALUES: dict[tuple[Any, ...], Any] = {
    ("user", 1): {"name": "ada"},
    ("user", 2): {"name": "bob"},
    ("users",): [1, 2],
}


@attrs.define
class Reads:
    """What a second client saw reading keys from the store."""

    values: dict[tuple[Any, ...], Any] = attrs.Factory(dict)
    origin_calls: list[tuple[Any, ...]] = attrs.Factory(list)


async def read_back(store: Any, keys: list[tuple[Any, ...]], serializer: Any = None) -> Reads:
    """Fetch ``keys`` through a new client that holds data fresh forever.

    A key whose L2 entry is invalidated is served stale and refetched: its
    origin is called.  Any other key is a fresh hit from L2.
    """
    reads = Reads()
    config = sq.QueryClientConfig(stale_time=math.inf, gc_time=math.inf, serializer=serializer)
    async with sq.open_query_client(attrs.evolve(config, storage=store)) as client:
        for key in keys:

            async def origin(key: tuple[Any, ...] = key) -> str:
                reads.origin_calls.append(key)
                return "refetched"

            options = sq.QueryOptions(query_key=key, query_fn=origin)
            reads.values[key] = await client.fetch_query(options)
    return reads


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A SQLite store filled by a real client."""
    path = tmp_path / "cache.db"

    async def go() -> None:
        async with SQLiteStorage(path) as store:
            await fill(store, VALUES)

    trio.run(go)
    return path


def test_invalidated_keys_are_refetched_by_the_next_client(sqlite_path: Path) -> None:
    """Keys under ["user"] are marked; a new client refetches them and not ["users"]."""
    result = run_cli("invalidate", "--sqlite", str(sqlite_path), '["user"]')
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f'invalidated 2 entries under ["user"] in the SQLite store {sqlite_path}\n'
    )
    reads = trio.run(read_back, SQLiteStorage(sqlite_path), list(VALUES))
    # Stale data is served at once; the refetch runs behind it.
    assert reads.values == VALUES
    assert reads.origin_calls == [("user", 1), ("user", 2)]


def test_second_run_finds_them_invalidated_already(
    sqlite_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Overlapping prefixes count each entry once; a second run changes nothing."""
    argv = ["invalidate", "--sqlite", str(sqlite_path), '["user", 1]', '["user"]']
    assert main(argv) == 0
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        f'invalidated 2 entries under ["user", 1] ["user"] in the SQLite store {sqlite_path}',
        f'invalidated 0 entries under ["user", 1] ["user"] in the SQLite store {sqlite_path} '
        "(2 already invalidated)",
    ]


def test_whole_store_with_the_empty_prefix(
    sqlite_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'[]' is every key under the key prefix."""
    assert main(["invalidate", "--sqlite", str(sqlite_path), "[]"]) == 0
    assert capsys.readouterr().out == (
        f"invalidated 3 entries under [] in the SQLite store {sqlite_path}\n"
    )
    reads = trio.run(read_back, SQLiteStorage(sqlite_path), list(VALUES))
    assert reads.origin_calls == list(VALUES)


def test_file_store_and_a_binary_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A msgpack entry is flagged with its payload, fetch time and TTL kept as they were."""
    directory = tmp_path / "files"
    msgpack = sq.serializers.msgpack

    async def write() -> None:
        async with FileStorage(directory) as store:
            await fill(store, {("blob", 1): {"b": [1, 2]}}, serializer=msgpack, gc_time=600.0)

    trio.run(write)
    assert main(["inspect", "--file", str(directory), "--json"]) == 0
    before = orjson.loads(capsys.readouterr().out)["entries"]
    assert main(["invalidate", "--file", str(directory), '["blob"]']) == 0
    assert capsys.readouterr().out == (
        f'invalidated 1 entry under ["blob"] in the file store {directory}\n'
    )
    assert main(["inspect", "--file", str(directory), "--json"]) == 0
    after = orjson.loads(capsys.readouterr().out)["entries"]
    assert [entry["invalidated"] for entry in before + after] == [False, True]
    assert after[0]["serializer"] == "msgpack"
    assert after[0]["size"] == before[0]["size"]
    assert after[0]["data_updated_at"] == before[0]["data_updated_at"]
    assert 0 < after[0]["ttl"] <= before[0]["ttl"]
    reads = trio.run(read_back, FileStorage(directory), [("blob", 1)], msgpack)
    assert reads.values == {("blob", 1): {"b": [1, 2]}}
    assert reads.origin_calls == [("blob", 1)]


def test_unreadable_entries_are_left_alone(
    sqlite_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A matching key whose value is not an entry is named, kept as is, and exits 1."""

    async def spoil() -> bytes | None:
        async with SQLiteStorage(sqlite_path) as store:
            await store.set('sq:["user",3]', b"not an entry")
            return await store.get('sq:["user",3]')

    trio.run(spoil)
    assert main(["invalidate", "--sqlite", str(sqlite_path), '["user"]']) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'invalidated 2 entries under ["user"] in the SQLite store {sqlite_path} '
        "(1 unreadable, left alone)",
        '  sq:["user",3]: foreign: corrupt entry (foreign): not a stackquery entry',
    ]

    async def raw() -> bytes | None:
        async with SQLiteStorage(sqlite_path) as store:
            return await store.get('sq:["user",3]')

    assert trio.run(raw) == b"not an entry"


def test_other_key_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--prefix names the client's key_prefix; keys under another prefix are not touched."""
    path = tmp_path / "cache.db"

    async def write() -> None:
        async with SQLiteStorage(path) as store:
            await fill(store, VALUES)
            config = sq.QueryClientConfig(key_prefix="app:", gc_time=math.inf, storage=store)
            async with sq.open_query_client(config) as client:
                await client.set_query_data(("user", 1), "app's")

    trio.run(write)
    assert main(["invalidate", "--sqlite", str(path), "--prefix", "app:", '["user"]']) == 0
    assert capsys.readouterr().out == (
        f'invalidated 1 entry under ["user"] in the SQLite store {path}\n'
    )
    reads = trio.run(read_back, SQLiteStorage(path), [("user", 1)])
    assert reads.origin_calls == []


@pytest.mark.parametrize(
    ("key_prefix", "message"),
    [
        ("user", "a key prefix is a JSON array such as '[\"user\"]', got 'user'"),
        ('{"a": 1}', "a key prefix is a JSON array such as '[\"user\"]', got '{\"a\": 1}'"),
        ("[1e400]", "a key prefix is a JSON array such as '[\"user\"]', got '[1e400]'"),
    ],
)
def test_bad_key_prefix(
    sqlite_path: Path, capsys: pytest.CaptureFixture[str], key_prefix: str, message: str
) -> None:
    """A key prefix that is not a JSON array: exit 2, the store untouched."""
    assert main(["invalidate", "--sqlite", str(sqlite_path), key_prefix]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"stackquery invalidate: error: {message}\n"
    reads = trio.run(read_back, SQLiteStorage(sqlite_path), list(VALUES))
    assert reads.origin_calls == []


def test_missing_store(tmp_path: Path) -> None:
    """A SQLite path that does not exist: exit 2 from the command line."""
    result = run_cli("invalidate", "--sqlite", str(tmp_path / "none.db"), '["user"]')
    assert result.returncode == 2
    assert result.stderr == (
        f"stackquery invalidate: error: no SQLite store at {tmp_path / 'none.db'}: "
        "the path does not exist\n"
    )
    assert not (tmp_path / "none.db").exists()
