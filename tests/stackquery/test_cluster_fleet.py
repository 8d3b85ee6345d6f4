"""The fleet, ``bg`` and the CLI on a real Redis Cluster (the session's 3 masters, 3 replicas).

Each client has its own ``RedisStorage("redis+cluster://...")`` (its own
connections and subscription, on a node of its own choosing), as a separate
process would.  Each test has its own ``key_prefix``, so its own channel
and lease keys.  Every wait is bounded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

import stackquery as sq
from backends import RedisClusterClient, RedisStorage
from backends._cluster_slots import key_slot
from stackquery._keys import canonical_key
from stackquery.cli._inspect import collect
from stackquery.cli._redis_invalidate import invalidate_redis
from stackquery.cli._stores import StoreTarget
from tests.redis_cluster import RedisCluster
from tests.stackquery.fleet_support import fleet, open_clients, wait_until
from tests.stackquery.fleet_workers.harness import open_workers
from tests.stackquery.test_bg_processes import PROCESS_TIMEOUT, run_worker

pytestmark = pytest.mark.slow

KEYS = 20
REPO_ROOT = Path(__file__).resolve().parents[2]
README_MARK = "<!-- cluster snippet: run by tests/stackquery/test_cluster_fleet.py -->\n```python\n"


class SlowOrigin:
    """An origin shared by every client (as a database would be): counts calls per key."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.calls: dict[Any, int] = {}

    def for_key(self, key: tuple[Any, ...]) -> Any:
        async def load() -> dict[str, Any]:
            self.calls[key] = self.calls.get(key, 0) + 1
            await trio.sleep(self.delay)
            return {"key": list(key), "n": self.calls[key]}

        return load


def spread_over_masters(cluster: RedisCluster, prefix: str) -> list[tuple[Any, ...]]:
    """``KEYS`` query keys whose entries (and leases) live on every master."""
    keys = [("item", i) for i in range(KEYS)]
    names = [prefix + canonical_key(key)[1] for key in keys]
    assert len({cluster.owner_of(key_slot(name)) for name in names}) == 3
    return keys


class TestFleetOnACluster:
    async def test_two_clients_call_the_origin_once_per_key(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """2 clients x 20 cold keys on 3 masters: 20 origin calls, not 40; one value per key."""
        keys = spread_over_masters(redis_cluster, cluster_prefix)
        origin = SlowOrigin()
        results: dict[int, dict[Any, Any]] = {0: {}, 1: {}}
        async with open_clients(redis_cluster_url, 2, key_prefix=cluster_prefix) as clients:

            async def fetch(which: int, key: tuple[Any, ...]) -> None:
                options = sq.QueryOptions(key, origin.for_key(key))
                results[which][key] = await clients[which].fetch_query(options)

            with trio.fail_after(15):
                async with trio.open_nursery() as nursery:
                    for key in keys:
                        for which in (0, 1):
                            nursery.start_soon(fetch, which, key)
            stats = [fleet(client) for client in clients]
        assert sum(origin.calls.values()) == KEYS
        assert results[0] == results[1]
        assert sum(s.leases_taken for s in stats) == KEYS
        assert [s.errors for s in stats] == [0, 0]

    async def test_an_invalidation_and_new_data_reach_every_client(
        self, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """Invalidate in A: B and C (subscribed on nodes of their own) take it; so with new data."""
        async with open_clients(redis_cluster_url, 3, key_prefix=cluster_prefix) as (a, b, c):
            origin = SlowOrigin()
            options = sq.QueryOptions(("user", 1), origin.for_key(("user", 1)))
            for client in (a, b, c):
                await client.fetch_query(options)
            await a.invalidate_queries(("user",), refetch=False)
            for client in (b, c):
                await wait_until(lambda c=client: c.get_query_state(("user", 1)).is_invalidated)
            await a.set_query_data(("user", 1), {"name": "new"})
            for client in (b, c):
                await wait_until(lambda c=client: c.get_query_data(("user", 1)) == {"name": "new"})
            assert [fleet(client).errors for client in (a, b, c)] == [0, 0, 0]


class TestFleetProcessesOnACluster:
    async def test_four_processes_of_250_callers_call_the_origin_once(
        self, redis_cluster_url: str, cluster_prefix: str, tmp_path: Path
    ) -> None:
        """4 processes x 250 concurrent callers of one cold key on the cluster: one origin call."""
        key = ["report", cluster_prefix]
        async with open_workers(redis_cluster_url, 4, tmp_path, delay=0.2) as workers:
            sent = [await worker.send("burst", key=key, callers=250) for worker in workers]
            replies = [await worker.reply(i) for worker, i in zip(workers, sent, strict=True)]
            stats = [await worker.stats() for worker in workers]
        async with RedisClusterClient.from_url(redis_cluster_url) as redis:
            calls = await redis.execute("GET", b"origin:" + orjson.dumps(key))
        assert calls == b"1"
        values = [reply["values"] for reply in replies]
        assert values == [[[values[0][0][0], 250]]] * 4
        assert sum(s["leases_taken"] for s in stats) == 1


class TestBgOnACluster:
    async def test_a_reader_process_follows_the_writer_process_by_its_messages(
        self, redis_cluster_url: str, tmp_path: Path
    ) -> None:
        """bg.write in one process, bg.read (polling hourly) in another: messages bring values."""
        refreshes = 8
        results: dict[str, dict[str, Any]] = {}

        async def run(name: str, script: str, *args: object) -> None:
            results[name] = await run_worker(script, *args)

        entry = "sq:" + canonical_key(("bg", "rates"))[1]
        async with RedisClusterClient.from_url(redis_cluster_url) as redis:
            await redis.execute("UNLINK", entry)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    run, "writer", "bg_writer.py", redis_cluster_url, 0.3, refreshes, tmp_path, 1
                )
                with trio.fail_after(PROCESS_TIMEOUT):
                    while await redis.execute("EXISTS", entry) == 0:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                nursery.start_soon(
                    run, "reader", "bg_reader.py", redis_cluster_url, 3600.0, refreshes, tmp_path
                )
        reader = results["reader"]
        numbers = [value["n"] for value in reader["seen"]]
        assert numbers[-1] == refreshes
        assert len(numbers) >= 2
        assert reader["request_path_ops"] == 0
        assert reader["writes"] == 0


class TestCliOnACluster:
    async def test_inspect_and_invalidate_cover_every_master(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """inspect lists the entries of all 3 masters; invalidate flags each and tells clients."""
        keys = spread_over_masters(redis_cluster, cluster_prefix)
        origin = SlowOrigin(delay=0)
        async with open_clients(redis_cluster_url, 2, key_prefix=cluster_prefix) as (a, b):
            for key in keys:
                await a.fetch_query(sq.QueryOptions(key, origin.for_key(key)))
                await b.fetch_query(sq.QueryOptions(key, origin.for_key(key)))
            await wait_until(lambda: a.l2_statistics().pending_writes == 0)  # type: ignore[union-attr]
            target = StoreTarget("redis", redis_cluster_url)
            report = await collect(target, cluster_prefix)
            assert report.counts["ok"] == KEYS
            assert sorted(info.name for info in report.entries if info.status == "ok") == sorted(
                cluster_prefix + canonical_key(key)[1] for key in keys
            )
            invalidated = await invalidate_redis(
                redis_cluster_url, ['["item"]'], prefix=cluster_prefix
            )
            assert invalidated.store.invalidated == KEYS
            assert invalidated.listeners == 2
            for key in keys:
                await wait_until(lambda k=key: b.get_query_state(k).is_invalidated)  # type: ignore[union-attr]
        async with RedisStorage(redis_cluster_url, prefix=cluster_prefix) as store:
            raws = await store.get_many([canonical_key(key)[1] for key in keys])
        assert all(sq.unpack_entry(raw, sq.serializers.json).invalidated for raw in raws)  # type: ignore[arg-type]


class TestReadme:
    async def test_the_cluster_snippet_runs(self, redis_cluster_url: str, tmp_path: Path) -> None:
        """The README's cluster example, given the test cluster's URL, prints its value and 3."""
        readme = (REPO_ROOT / "README.md").read_text()
        snippet = readme.split(README_MARK, 1)[1].split("```", 1)[0]
        with trio.fail_after(60.0):
            done = await trio.run_process(
                [sys.executable, "-c", snippet, redis_cluster_url],
                cwd=tmp_path,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )
        assert (done.returncode, done.stderr.decode()) == (0, "")
        assert done.stdout.decode() == "{'name': 'ada'}\n3\n"


def test_a_cluster_url_given_as_storage_names_the_fix() -> None:
    """storage="redis+cluster://..." is refused with the RedisStorage call that works."""
    url = "redis+cluster://10.0.0.1:7000"
    with pytest.raises(
        sq.InvalidOptionError, match=r"; use RedisStorage\('redis\+cluster://10\.0\.0\.1:7000'\)$"
    ):
        sq.QueryClientConfig(storage=url)
