"""``bg.write`` / ``bg.read`` across real OS processes sharing one real redis-server.

One writer process (``workers/bg_writer.py``) refreshes ``rates`` into Redis;
reader processes (``workers/bg_reader.py``) each run their own ``trio.run``,
call their reader in a loop and report what they saw and which store
operations they made.  Every wait is bounded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from backends._redis_client import RedisClient
from stackquery._keys import canonical_key

pytestmark = pytest.mark.slow

WORKERS = Path(__file__).with_name("workers")
REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESS_TIMEOUT = 60.0
"""Seconds a worker may take, imports included (several at once on 2 cores)."""
ENTRY_KEY = "sq:" + canonical_key(("bg", "rates"))[1]


async def run_worker(script: str, *args: object) -> dict[str, Any]:
    """Run a worker to completion (bounded) and return its JSON report."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with trio.fail_after(PROCESS_TIMEOUT):
        done = await trio.run_process(
            [sys.executable, str(WORKERS / script), *map(str, args)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
            cwd=REPO_ROOT,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    report: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return report


async def wait_for_entry(url: str) -> None:
    """Wait (bounded) until the writer's first value is in Redis."""
    async with RedisClient.from_url(url) as redis:
        with trio.fail_after(PROCESS_TIMEOUT):
            # Another process writes it: there is no event to wait on but Redis itself.
            while await redis.execute("EXISTS", ENTRY_KEY) == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)


class TestWriterAndReaders:
    async def test_readers_follow_the_writer_without_touching_the_store_per_call(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """Two readers follow the writer's values; no call touches Redis; readers never write."""
        refreshes = 15
        results: dict[str, dict[str, Any]] = {}

        async def run(name: str, script: str, *args: object) -> None:
            results[name] = await run_worker(script, *args)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run, "writer", "bg_writer.py", redis_url, 0.2, refreshes, tmp_path, 2
            )
            await wait_for_entry(redis_url)
            for name in ("reader1", "reader2"):
                nursery.start_soon(run, name, "bg_reader.py", redis_url, 0.05, refreshes, tmp_path)

        writer = results["writer"]
        assert writer["refreshes"] == refreshes
        for name in ("reader1", "reader2"):
            reader = results[name]
            numbers = [value["n"] for value in reader["seen"]]
            assert numbers == sorted(set(numbers))
            assert numbers[-1] == refreshes
            assert len(numbers) >= 2
            assert {value["pid"] for value in reader["seen"]} == {writer["pid"]}
            assert reader["request_path_ops"] == 0
            assert reader["writes"] == 0
            assert reader["background_gets"] >= len(numbers)
            assert reader["calls"] > reader["background_gets"]

    async def test_a_reader_follows_the_writers_messages_without_polling(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """A reader polling once an hour still follows the writer: its messages bring the values."""
        refreshes = 12
        results: dict[str, dict[str, Any]] = {}

        async def run(name: str, script: str, *args: object) -> None:
            results[name] = await run_worker(script, *args)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run, "writer", "bg_writer.py", redis_url, 0.2, refreshes, tmp_path, 1
            )
            await wait_for_entry(redis_url)
            nursery.start_soon(
                run, "reader", "bg_reader.py", redis_url, 3600.0, refreshes, tmp_path
            )

        reader = results["reader"]
        numbers = [value["n"] for value in reader["seen"]]
        assert numbers[-1] == refreshes
        assert len(numbers) >= 2
        assert reader["request_path_ops"] == 0
        assert reader["writes"] == 0

    async def test_a_reader_started_after_the_writer_exited_serves_its_last_value(
        self, redis_url: str
    ) -> None:
        """The writer's last value stays in Redis for readers that come later."""
        writer = await run_worker("bg_writer.py", redis_url, 0.05, 3)
        reader = await run_worker("bg_reader.py", redis_url, 0.05, 3)
        assert reader["seen"] == [{"n": 3, "pid": writer["pid"]}]
        assert reader["request_path_ops"] == 0
