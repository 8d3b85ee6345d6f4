"""``stackquery invalidate --redis URL KEY-PREFIX...``: an operator invalidates keys fleet-wide.

The command flags the matching L2 entries in Redis (for processes that read
them later) and publishes the fleet's invalidation message (for the running
ones).  Tested against a real redis-server: in-process, through ``main()``,
and as a real command against real worker processes.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import stackquery as sq
from backends._redis_client import RedisClient
from stackquery.__main__ import main
from stackquery.cli._redis_invalidate import invalidate_redis
from stackquery.cli._stores import StoreTarget
from tests.redis_server import RedisServer, free_loopback_port
from tests.stackquery.fleet_support import Counted, open_clients, wait_until
from tests.stackquery.fleet_workers.harness import REPO_ROOT, open_workers

pytestmark = pytest.mark.slow

PREFIX = "sq:"
"""``RedisStorage``'s default prefix, then the client's default ``key_prefix``."""
CHANNEL = "sq:events:db0"


def name_of(key: tuple[Any, ...]) -> str:
    """The Redis key of ``key``'s L2 entry under the default prefixes."""
    return PREFIX + sq.QueryOptions(key, Counted("unused")).key_hash


async def put_entry(
    redis: RedisClient,
    key: tuple[Any, ...],
    value: Any,
    *,
    ttl_ms: int | None = 600_000,
    invalidated: bool = False,
    serializer: Any = sq.serializers.json,
) -> None:
    """Store an entry of ``value`` as a client would have written it."""
    raw = sq.pack_entry(
        value, data_updated_at=1_700_000_000.5, serializer=serializer, invalidated=invalidated
    )
    expiry = ("PX", ttl_ms) if ttl_ms is not None else ()
    await redis.execute("SET", name_of(key), raw, *expiry)


async def read_entry(redis: RedisClient, key: tuple[Any, ...], serializer: Any) -> sq.StoredEntry:
    """The entry of ``key`` as it is in Redis now."""
    raw = await redis.execute("GET", name_of(key))
    assert isinstance(raw, bytes)
    return sq.unpack_entry(raw, serializer)


class TestInvalidateRedis:
    async def test_flags_matching_entries_and_tells_running_clients(self, redis_url: str) -> None:
        """Matching entries are flagged (TTL and value kept), others untouched; clients are told."""
        msgpack = sq.serializers.msgpack
        async with (
            RedisClient.from_url(redis_url) as redis,
            open_clients(redis_url, 1) as (running,),
        ):
            await running.fetch_query(sq.QueryOptions(("user", 7), Counted("v")))
            await wait_until(lambda: running.l2_statistics().pending_writes == 0)  # type: ignore[union-attr]
            await put_entry(redis, ("user", 1), {"name": "ada"})
            await put_entry(redis, ("user", 2), b"\x01", serializer=msgpack, ttl_ms=None)
            await put_entry(redis, ("user", 3), "old", invalidated=True)
            await put_entry(redis, ("users", 1), "not under ['user']")
            await put_entry(redis, ("team", 1), "other prefix")
            await redis.execute("SET", PREFIX + '["user",4]', b"not an entry")
            await redis.execute("HSET", PREFIX + '["user",5]', "field", "value")
            report = await invalidate_redis(redis_url, ['["user"]'], prefix=PREFIX, channel=CHANNEL)
            assert report.store.target == StoreTarget("redis", redis_url)
            assert (report.store.invalidated, report.store.already_invalidated) == (3, 1)
            assert report.store.expired == 0
            assert [(i.name, i.status) for i in report.store.unreadable] == [
                (PREFIX + '["user",4]', "foreign"),
                (PREFIX + '["user",5]', "foreign"),
            ]
            assert (report.channel, report.listeners, report.busy) == (CHANNEL, 1, 0)
            assert await read_entry(redis, ("user", 1), sq.serializers.json) == sq.StoredEntry(
                {"name": "ada"}, 1_700_000_000.5, True, "json"
            )
            assert await read_entry(redis, ("user", 2), msgpack) == sq.StoredEntry(
                b"\x01", 1_700_000_000.5, True, "msgpack"
            )
            assert (await read_entry(redis, ("user", 7), sq.serializers.json)).invalidated
            assert not (await read_entry(redis, ("users", 1), sq.serializers.json)).invalidated
            assert not (await read_entry(redis, ("team", 1), sq.serializers.json)).invalidated
            pttl = await redis.execute("PTTL", name_of(("user", 1)))
            assert isinstance(pttl, int) and 590_000 < pttl <= 600_000
            assert await redis.execute("PTTL", name_of(("user", 2))) == -1
            await wait_until(lambda: running.get_query_state(("user", 7)).is_invalidated)  # type: ignore[union-attr]

    async def test_an_exact_key_prefix_matches_that_key_and_the_ones_below(
        self, redis_url: str
    ) -> None:
        """``["user", 4]`` takes ``["user", 4]`` and ``["user", 4, "x"]``, not ``["user", 42]``."""
        async with RedisClient.from_url(redis_url) as redis:
            for key in [("user", 4), ("user", 4, "x"), ("user", 42)]:
                await put_entry(redis, key, "v")
            report = await invalidate_redis(
                redis_url, ['["user", 4]'], prefix=PREFIX, channel=CHANNEL
            )
            assert report.store.invalidated == 2
            assert (await read_entry(redis, ("user", 4, "x"), sq.serializers.json)).invalidated
            assert not (await read_entry(redis, ("user", 42), sq.serializers.json)).invalidated


class TestCommandLine:
    def test_prints_what_it_did_and_exits_0(
        self, redis_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A clean run prints the count and the publication, and exits 0."""

        async def seed() -> None:
            async with RedisClient.from_url(redis_url) as redis:
                await put_entry(redis, ("user", 1), "a")
                await put_entry(redis, ("user", 2), "b")

        trio.run(seed)
        assert main(["invalidate", "--redis", redis_url, '["user"]']) == 0
        captured = capsys.readouterr()
        assert captured.out == (
            f'invalidated 2 entries under ["user"] in the Redis {redis_url}\n'
            "published on sq:events:db0: 0 subscribers got it\n"
        )
        assert captured.err == ""

    def test_unreadable_entries_exit_1(
        self, redis_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Entries that are not stackquery's are left alone, named, and the exit code is 1."""

        async def seed() -> None:
            async with RedisClient.from_url(redis_url) as redis:
                await redis.execute("SET", PREFIX + '["user",1]', "plain text")

        trio.run(seed)
        assert main(["invalidate", "--redis", redis_url, "--channel", "app:events", "[]"]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert (
            lines[0]
            == f"invalidated 0 entries under [] in the Redis {redis_url} (1 unreadable, left alone)"
        )
        assert lines[1].startswith(f'  {PREFIX}["user",1]: foreign: ')
        assert lines[2] == "published on app:events: 0 subscribers got it"

    def test_an_unreachable_redis_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Nobody listening at the URL: a one-line error and exit code 2."""
        url = f"redis://127.0.0.1:{free_loopback_port()}/0"
        assert main(["invalidate", "--redis", url, '["user"]']) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(
            f"stackquery invalidate: error: cannot reach Redis at {url}: "
        )

    @pytest.mark.parametrize(
        ("argument", "message"),
        [
            (
                '{"user": 1}',
                r"""a key prefix is a JSON array such as '\["user"\]', got '\{"user": 1\}'""",
            ),
            ("[1.5e400]", r"a key prefix is a JSON array such as .*, got '\[1\.5e400\]'"),
            ('[{"a": [1]}]', r"key prefix .* is not a valid query key: .* holds a list; .*"),
        ],
    )
    def test_a_bad_key_prefix_exits_2(
        self, redis_url: str, argument: str, message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A key prefix that is not a JSON array of a valid key: a clear error, exit code 2."""
        assert main(["invalidate", "--redis", redis_url, argument]) == 2
        assert re.fullmatch(f"stackquery invalidate: error: {message}\n", capsys.readouterr().err)

    def test_a_bad_url_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A URL that is not a Redis URL: a clear error, exit code 2."""
        assert main(["invalidate", "--redis", "http://example.com", '["user"]']) == 2
        assert capsys.readouterr().err.startswith(
            "stackquery invalidate: error: bad Redis URL 'http://example.com': "
        )

    def test_no_key_prefix_is_a_usage_error(self, redis_url: str) -> None:
        """Without a KEY-PREFIX argparse refuses the command line with exit code 2."""
        with pytest.raises(SystemExit) as exit_info:
            main(["invalidate", "--redis", redis_url])
        assert exit_info.value.code == 2


class TestAgainstRunningProcesses:
    async def test_invalidates_in_every_running_process_and_for_later_ones(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """`python -m stackquery invalidate` reaches two running processes and one started after."""
        url = redis_server.url
        async with open_workers(url, 2, tmp_path) as (a, b):
            for key in (["user", 1], ["team", 1]):
                await a.call("fetch", key=key)
                await b.call("fetch", key=key)
            done = await trio.run_process(
                [sys.executable, "-m", "stackquery", "invalidate", "--redis", url, '["user"]'],
                capture_stdout=True,
                capture_stderr=True,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.decode() == (
                f'invalidated 1 entry under ["user"] in the Redis {url}\n'
                "published on sq:events:db0: 2 subscribers got it\n"
            )
            for worker in (a, b):
                await worker.wait_state(
                    ["user", 1], lambda s: s is not None and s["is_invalidated"]
                )
                state = (await worker.call("state", key=["team", 1]))["state"]
                assert state["is_invalidated"] is False
        async with open_workers(url, 1, tmp_path) as (c,):
            reply = await c.call("fetch", key=["user", 1])
            assert reply["data"]["n"] == 1
            assert reply["state"]["is_invalidated"] is True
            state = await c.wait_state(["user", 1], lambda s: s is not None and s["data"]["n"] == 2)
            assert state is not None and state["is_invalidated"] is False
