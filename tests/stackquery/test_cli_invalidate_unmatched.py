"""``stackquery invalidate`` on a store: a key prefix that matches nothing says what is there."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import stackquery as sq
from backends import SQLiteStorage
from stackquery.__main__ import main
from tests.stackquery.cli_process import fill
from tests.stackquery.test_cli_store_invalidate import VALUES, sqlite_path

__all__ = ["sqlite_path"]  # the fixture, used by name: ("user", 1), ("user", 2), ("users",)


def test_a_local_store_names_the_prefixes_it_has_and_exits_1(
    sqlite_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The matching prefix is invalidated; the other one is reported with what is near it."""
    argv = ["invalidate", "--sqlite", str(sqlite_path), '["user", 1]', '["usr"]', '["user", 9]']
    assert main(argv) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'invalidated 1 entry under ["user", 1] ["usr"] ["user", 9] in the SQLite store '
        f"{sqlite_path}",
        '  no entries under ["usr"]; prefixes there: ["user"] (2 keys), ["users"] (1 key)',
        '  no entries under ["user", 9]; prefixes there: ["user",1] (1 key), ["user",2] (1 key)',
    ]


def test_an_empty_store_says_it_holds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No keys at all: said so."""
    path = tmp_path / "empty.db"

    async def go() -> None:
        async with SQLiteStorage(path) as store:
            await fill(store, {("gone",): 1})
            await store.delete('sq:["gone"]')

    trio.run(go)
    assert main(["invalidate", "--sqlite", str(path), '["user"]']) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        '  no entries under ["user"]; it holds no keys'
    ]


async def test_redis_notes_the_prefix_and_still_tells_the_running_clients(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0: the message reaches keys running clients hold in memory, whatever Redis has."""
    async with sq.RedisStorage(redis_url) as store:
        await fill(store, VALUES)
    argv = ["invalidate", "--redis", redis_url, '["usr"]']
    assert await trio.to_thread.run_sync(main, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[1]
        == '  no entries under ["usr"]; prefixes there: ["user"] (2 keys), ["users"] (1 key)'
    )
    assert lines[2].startswith("published on sq:events:db0: ")
