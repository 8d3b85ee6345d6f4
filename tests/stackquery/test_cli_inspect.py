"""``stackquery inspect``: real SQLite, file and Redis stores, filled by real clients."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

import stackquery as sq
from backends import FileStorage, SQLiteStorage
from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from stackquery.__main__ import main
from tests.redis_fixtures import require_redis_server_binary
from tests.redis_server import RedisServer, free_loopback_port
from tests.stackquery.cli_process import fill, run_cli, table_keys

VALUES: dict[tuple[Any, ...], Any] = {
    ("user", 1): {"name": "ada"},
    ("user", 2): {"name": "bob"},
    ("users",): [1, 2],
}
ALL_KEYS = ['["blob",1]', '["post",7]', '["user",1]', '["user",2]', '["users"]']


async def fill_everything(store_factory: Any) -> None:
    """Entries of three kinds: JSON forever, JSON with a 600 s TTL, msgpack forever."""
    async with store_factory() as store:
        await fill(store, VALUES)
    async with store_factory() as store:
        await fill(store, {("post", 7): "hello"}, gc_time=600.0)
    async with store_factory() as store:
        await fill(store, {("blob", 1): {"b": 1}}, serializer=sq.serializers.msgpack)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A SQLite store filled by real clients."""
    path = tmp_path / "cache.db"
    trio.run(fill_everything, lambda: SQLiteStorage(path))
    return path


async def stored_sizes(path: Path) -> dict[str, int]:
    """The length of every value in the SQLite store, by store key."""
    async with SQLiteStorage(path) as store:
        return {key: len(value) async for key, value, _ in store.scan("")}


class TestSQLite:
    def test_plain_table_lists_every_key(self, sqlite_path: Path) -> None:
        """Every query key, decoded, one row each, by name; nothing wrong: exit 0."""
        result = run_cli("inspect", "--sqlite", str(sqlite_path), "--plain")
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert table_keys(result.stdout) == ALL_KEYS
        assert result.stdout.splitlines()[0].split() == [
            "KEY", "AGE", "TTL", "SIZE", "SERIALIZER", "INVALIDATED", "STATUS"
        ]  # fmt: skip
        rows = {line.split()[0]: line.split()[2:] for line in result.stdout.splitlines()[2:7]}
        assert rows['["user",1]'][0] == "never"
        assert rows['["blob",1]'][2:] == ["msgpack", "no", "ok"]
        assert rows['["users"]'][2:] == ["json", "no", "ok"]
        assert result.stdout.splitlines()[-1] == (
            f"5 keys under 'sq:' in the SQLite store {sqlite_path}: "
            "5 ok, 0 lease, 0 foreign, 0 corrupt"
        )

    def test_rich_table(self, sqlite_path: Path) -> None:
        """With rich installed the table is rich's, holding the same keys."""
        result = run_cli("inspect", "--sqlite", str(sqlite_path))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split() == [
            "KEY", "AGE", "TTL", "SIZE", "SERIALIZER", "INVALIDATED", "STATUS"
        ]  # fmt: skip
        assert set(lines[1]) == {"─"}
        assert [line.split()[0] for line in lines[2:7]] == ALL_KEYS

    def test_json_report(self, sqlite_path: Path) -> None:
        """--json gives every field, with exact sizes, flags, serializers and ages."""
        result = run_cli("inspect", "--sqlite", str(sqlite_path), "--json")
        assert result.returncode == 0, result.stderr
        report = orjson.loads(result.stdout)
        assert report["prefix"] == "sq:"
        assert report["total"] == 5
        assert report["counts"] == {"ok": 5, "lease": 0, "foreign": 0, "corrupt": 0}
        entries = report["entries"]
        assert [entry["key"] for entry in entries] == ALL_KEYS
        assert [entry["name"] for entry in entries] == [f"sq:{key}" for key in ALL_KEYS]
        sizes = trio.run(stored_sizes, sqlite_path)
        assert [entry["size"] for entry in entries] == [sizes[e["name"]] for e in entries]
        assert [entry["serializer"] for entry in entries] == ["msgpack"] + ["json"] * 4
        assert [entry["invalidated"] for entry in entries] == [False] * 5
        assert [entry["status"] for entry in entries] == ["ok"] * 5
        assert [entry["problem"] for entry in entries] == [None] * 5
        assert [entry["ttl"] is None for entry in entries] == [True, False, True, True, True]
        assert 0 < entries[1]["ttl"] <= 600.0
        for entry in entries:
            assert entry["age"] == report["now"] - entry["data_updated_at"]

    def test_limit_shows_the_first_keys_and_counts_all(
        self, sqlite_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--limit 2 shows the first two keys by name; the summary still counts five."""
        assert main(["inspect", "--sqlite", str(sqlite_path), "--plain", "--limit", "2"]) == 0
        out = capsys.readouterr().out
        assert table_keys(out) == ALL_KEYS[:2]
        assert out.splitlines()[-1] == (
            f"5 keys under 'sq:' in the SQLite store {sqlite_path}: "
            "5 ok, 0 lease, 0 foreign, 0 corrupt; showing the first 2 by name"
        )

    def test_foreign_and_corrupt_entries_are_reported(self, sqlite_path: Path) -> None:
        """A key that is not a query key and a damaged entry are listed as problems: exit 1."""

        async def spoil() -> None:
            async with SQLiteStorage(sqlite_path) as store:
                await store.set("sq:session-42", b"opaque")
                await store.set('sq:["user",3]', b'{"sq":1,"s":"json"')
                await store.set('sq:["user",4]', b"plain bytes")
                await store.set("elsewhere:x", b"not under the prefix")

        trio.run(spoil)
        result = run_cli("inspect", "--sqlite", str(sqlite_path), "--plain")
        assert result.returncode == 1, result.stderr
        assert table_keys(result.stdout) == [
            *ALL_KEYS[:4], '["user",3]', '["user",4]', '["users"]', "session-42"
        ]  # fmt: skip
        lines = result.stdout.splitlines()
        start = lines.index("problems:") + 1
        assert lines[start : start + 4] == [
            '  sq:["user",3]: corrupt: corrupt entry (malformed): envelope is not valid JSON: '
            "unexpected end of data: line 1 column 19 (char 18)",
            '  sq:["user",4]: foreign: corrupt entry (foreign): not a stackquery entry',
            "  sq:session-42: foreign: not a canonical query key",
            "",
        ]
        assert lines[-1] == (
            f"8 keys under 'sq:' in the SQLite store {sqlite_path}: "
            "5 ok, 0 lease, 2 foreign, 1 corrupt"
        )

    def test_inspect_writes_nothing(self, sqlite_path: Path) -> None:
        """Looking leaves the database file's bytes as they were."""
        before = hashlib.sha256(sqlite_path.read_bytes()).hexdigest()
        assert main(["inspect", "--sqlite", str(sqlite_path), "--json"]) == 0
        assert hashlib.sha256(sqlite_path.read_bytes()).hexdigest() == before


def test_file_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A FileStorage directory filled by real clients lists the same keys, by name."""
    trio.run(fill_everything, lambda: FileStorage(tmp_path / "files"))
    assert main(["inspect", "--file", str(tmp_path / "files"), "--plain"]) == 0
    out = capsys.readouterr().out
    assert table_keys(out) == ALL_KEYS
    assert out.splitlines()[-1] == (
        f"5 keys under 'sq:' in the file store {tmp_path / 'files'}: "
        "5 ok, 0 lease, 0 foreign, 0 corrupt"
    )


@pytest.fixture
def redis_without_keys() -> Iterator[RedisServer]:
    """A redis-server whose KEYS command is disabled: a tool that used it would fail."""
    require_redis_server_binary()
    with RedisServer(["--rename-command", "KEYS", ""]) as server:
        yield server


class TestRedis:
    def fill_redis(self, url: str, store_prefix: str = "") -> None:
        """Entries through RedisStorage and a real client, plus keys that are not entries."""
        namespace = store_prefix + "sq:"

        async def go() -> None:
            await fill_everything(lambda: RedisStorage(url, prefix=store_prefix))
            async with RedisClient.from_url(url) as redis:
                await redis.execute("HSET", f"{namespace}a-hash", "field", "value")
                await redis.execute("SET", f'{namespace}["junk"]', "junk", "PX", 90_000)
                await redis.execute("SET", "unrelated", "1")

        trio.run(go)

    def test_lists_the_prefix_with_scan(self, redis_without_keys: RedisServer) -> None:
        """Every key under sq: is listed (found with SCAN); keys of another kind are foreign."""
        self.fill_redis(redis_without_keys.url)
        result = run_cli("inspect", "--redis", redis_without_keys.url, "--json")
        assert result.returncode == 1, result.stderr
        report = orjson.loads(result.stdout)
        assert report["prefix"] == "sq:"
        assert report["counts"] == {"ok": 5, "lease": 0, "foreign": 2, "corrupt": 0}
        entries = {entry["name"]: entry for entry in report["entries"]}
        assert sorted(entries) == sorted(
            [f"sq:{key}" for key in ALL_KEYS] + ['sq:["junk"]', "sq:a-hash"]
        )
        assert entries["sq:a-hash"]["problem"] == (
            "not a string value: WRONGTYPE Operation against a key holding the wrong kind of value"
        )
        assert entries['sq:["junk"]']["status"] == "foreign"
        assert 0 < entries['sq:["junk"]']["ttl"] <= 90.0
        assert entries['sq:["blob",1]']["serializer"] == "msgpack"
        assert entries['sq:["user",1]']["ttl"] is None

    def test_wrong_prefix_gets_a_hint(
        self, redis_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A store with a prefix of its own: entries foreign under sq:, the hint names sq:sq:."""
        self.fill_redis(redis_url, store_prefix="sq:")
        assert main(["inspect", "--redis", redis_url, "--prefix", "sq:", "--plain"]) == 1
        assert capsys.readouterr().out.splitlines()[-2:] == [
            f"7 keys under 'sq:' in the Redis {redis_url}: 0 ok, 0 lease, 7 foreign, 0 corrupt",
            "hint: some foreign keys are entries under --prefix 'sq:sq:'",
        ]

    def test_empty_namespace(self, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """No key under the prefix: one line says so, exit 0."""
        assert main(["inspect", "--redis", redis_url]) == 0
        assert capsys.readouterr().out == f"no keys under 'sq:' in the Redis {redis_url}\n"


class TestErrors:
    def test_unreachable_redis(self) -> None:
        """A URL nobody listens on: a clear error and exit 2."""
        url = f"redis://127.0.0.1:{free_loopback_port()}/0"
        result = run_cli("inspect", "--redis", url)
        assert result.returncode == 2
        assert result.stdout == ""
        assert re.fullmatch(
            rf"stackquery inspect: error: cannot reach Redis at {re.escape(url)}: .+\n",
            result.stderr,
        )

    def test_missing_sqlite_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A path that does not exist: exit 2, and no database is created there."""
        path = tmp_path / "nothing.db"
        assert main(["inspect", "--sqlite", str(path)]) == 2
        assert capsys.readouterr().err == (
            f"stackquery inspect: error: no SQLite store at {path}: the path does not exist\n"
        )
        assert not path.exists()

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--sqlite", "{tmp}"], "no SQLite store at {tmp}: the path is not a file"),
            (["--file", "{tmp}/none"], "no file store at {tmp}/none: the path does not exist"),
            (
                ["--file", "{tmp}/plain.txt"],
                "no file store at {tmp}/plain.txt: the path is not a directory",
            ),
            (
                ["--sqlite", "{tmp}/plain.txt"],
                "{tmp}/plain.txt is not a readable SQLite database: file is not a database",
            ),
            (
                ["--redis", "http://example.com"],
                "bad Redis URL 'http://example.com': Redis URL must specify one of the "
                "following schemes (redis://, rediss://, unix://)",
            ),
        ],
    )
    def test_bad_locations(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        """Each wrong location is named in the error, with exit 2."""
        (tmp_path / "plain.txt").write_text("hello")
        args = [arg.format(tmp=tmp_path) for arg in argv]
        assert main(["inspect", *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"stackquery inspect: error: {message.format(tmp=tmp_path)}\n"

    def test_sqlite_database_of_another_program(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A SQLite file without the store's table is refused and left without one."""
        path = tmp_path / "other.db"
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.close()
        assert main(["inspect", "--sqlite", str(path)]) == 2
        assert capsys.readouterr().err == (
            f"stackquery inspect: error: {path} is not a stackquery SQLite store "
            "(no stackquery_entries table)\n"
        )
        connection = sqlite3.connect(path)
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert tables.fetchall() == [("notes",)]
        connection.close()

    def test_password_is_hidden(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A password in the URL never reaches the error message."""
        url = f"redis://:s3cret@127.0.0.1:{free_loopback_port()}/0"
        assert main(["inspect", "--redis", url]) == 2
        err = capsys.readouterr().err
        assert "s3cret" not in err
        assert err.startswith(
            f"stackquery inspect: error: cannot reach Redis at {url.replace('s3cret', '***')}: "
        )

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            ([], "one of the arguments --sqlite --file --redis --attach is required"),
            (
                ["--sqlite", "a", "--file", "b"],
                "argument --file: not allowed with argument --sqlite",
            ),
            (
                ["--sqlite", "a", "--limit", "0"],
                "argument --limit: expected a positive whole number, got '0'",
            ),
        ],
    )
    def test_usage_errors(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        """Bad usage exits with status 2 and says what was wrong."""
        with pytest.raises(SystemExit) as exit_info:
            main(["inspect", *argv])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"stackquery inspect: error: {message}"
