"""Hearing writes we did not make, on a Redis Cluster: ``redis_tracking`` on every master.

The session's real 3-master, 3-replica cluster; each test has its own
``key_prefix``.  Clients in one trio.run (each with its own connections, as
separate processes would be); writes "by another tool" go through a plain
``RedisClusterClient``.  Real time, every wait a condition with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import trio

import stackquery as sq
from backends import RedisClusterClient, RedisStorage
from backends._cluster_slots import key_slot
from stackquery._keys import canonical_key
from tests.redis_cluster import RedisCluster, command, tracking_ids
from tests.stackquery.fleet_support import Counted, fleet, open_clients, wait_until

pytestmark = pytest.mark.slow


class PerKey:
    """An origin per query key, each counting its calls: ``origin(key)`` is its query_fn."""

    def __init__(self) -> None:
        self.origins: dict[Any, Counted] = {}

    def __call__(self, key: tuple[Any, ...]) -> Counted:
        return self.origins.setdefault(key, Counted(f"{key[1]}:"))

    def calls(self) -> dict[Any, int]:
        return {key: origin.calls for key, origin in self.origins.items()}


def one_key_per_master(cluster: RedisCluster, prefix: str) -> dict[int, tuple[Any, ...]]:
    """A query key whose entry (under ``prefix``) lives on each master, by the master's port."""
    found: dict[int, tuple[Any, ...]] = {}
    i = 0
    while len(found) < cluster.masters:
        key = ("item", i)
        found.setdefault(cluster.owner_of(key_slot(entry_name(prefix, key))), key)
        i += 1
    return found


def entry_name(prefix: str, key: tuple[Any, ...]) -> str:
    """The key's L2 entry name on the cluster (the store has no prefix of its own)."""
    return prefix + canonical_key(key)[1]


def state_of(client: sq.QueryClient, key: tuple[Any, ...]) -> sq.QueryState[Any]:
    state = client.get_query_state(key)
    assert state is not None
    return state


async def fetch_each(
    client: sq.QueryClient, keys: Iterable[tuple[Any, ...]], origin: PerKey
) -> None:
    """Fetch every key once (each its first value, from the origin or L2)."""
    for key in keys:
        await client.fetch_query(sq.QueryOptions(key, origin(key)))


async def set_raw(url: str, name: str, value: str) -> None:
    """Write ``name`` as another tool would: a plain connection, not stackquery."""
    async with RedisClusterClient.from_url(url) as redis:
        await redis.execute("SET", name, value)


class TestWritesByOthers:
    async def test_a_write_on_each_master_marks_its_key_stale_and_the_next_read_refetches_once(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """A raw SET on one entry per master: each key stale in L1; each refetched once."""
        keys = one_key_per_master(redis_cluster, cluster_prefix)
        origin = PerKey()
        async with open_clients(redis_cluster_url, 1, key_prefix=cluster_prefix) as (a,):
            assert fleet(a).tracking is True
            for key in keys.values():
                assert await a.fetch_query(sq.QueryOptions(key, origin(key))) == f"{key[1]}:1"
            await wait_until(lambda: fleet(a).keys_invalidated == 3)  # our own writes, heard
            assert fleet(a).invalidations_stale == 0
            for key in keys.values():
                await set_raw(redis_cluster_url, entry_name(cluster_prefix, key), "not ours")
                await wait_until(lambda k=key: state_of(a, k).is_invalidated)
            assert fleet(a).invalidations_stale == 3
            for key in keys.values():
                # Served stale at once, refetched once.
                assert await a.fetch_query(sq.QueryOptions(key, origin(key))) == f"{key[1]}:1"
                await wait_until(lambda k=key: a.get_query_data(k) == f"{k[1]}:2")
            stats = fleet(a)
            assert (stats.invalidations_stale, stats.rejected, stats.errors) == (3, 0, 0)
        assert origin.calls() == dict.fromkeys(keys.values(), 2)

    async def test_an_expiry_on_every_master_marks_the_keys_stale(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """Entries whose TTL ran out in L2 (on each master) are stale in L1; nothing refetched."""
        keys = one_key_per_master(redis_cluster, cluster_prefix)
        origin = PerKey()
        async with open_clients(
            redis_cluster_url, 1, key_prefix=cluster_prefix, storage_ttl=0.3
        ) as (a,):
            await fetch_each(a, keys.values(), origin)
            for key in keys.values():
                await wait_until(lambda k=key: state_of(a, k).is_invalidated)
            assert fleet(a).invalidations_stale == 3
        assert origin.calls() == dict.fromkeys(keys.values(), 1)

    async def test_a_flushall_on_one_master_marks_everything_stale(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """FLUSHALL names no key: every key held, on whichever master, is taken as stale."""
        keys = one_key_per_master(redis_cluster, cluster_prefix)
        origin = PerKey()
        async with open_clients(redis_cluster_url, 1, key_prefix=cluster_prefix) as (a,):
            await fetch_each(a, keys.values(), origin)
            await wait_until(lambda: fleet(a).keys_invalidated == 3)
            flushed = next(iter(keys))
            await trio.to_thread.run_sync(command, flushed, "FLUSHALL")
            await wait_until(lambda: fleet(a).flushes == 1)
            assert all(state_of(a, key).is_invalidated for key in keys.values())
        assert origin.calls() == dict.fromkeys(keys.values(), 1)


class TestOurOwnWrites:
    async def test_own_and_fleet_writes_on_every_master_call_no_origin(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """Two clients, keys on 3 masters, 10 sets each: all heard, none stale, no refetch."""
        keys = list(one_key_per_master(redis_cluster, cluster_prefix).values())
        origin_a, origin_b = PerKey(), PerKey()
        async with open_clients(redis_cluster_url, 2, key_prefix=cluster_prefix) as (a, b):
            for key in keys:
                assert await a.fetch_query(sq.QueryOptions(key, origin_a(key))) == f"{key[1]}:1"
                assert await b.fetch_query(sq.QueryOptions(key, origin_b(key))) == f"{key[1]}:1"
            for n in range(10):
                for key in keys:
                    await a.set_query_data(key, f"set {n}")
            for key in keys:
                await wait_until(lambda k=key: b.get_query_data(k) == "set 9")
            await wait_until(lambda: a.l2_statistics().pending_writes == 0)  # type: ignore[union-attr]
            written = a.l2_statistics().writes + b.l2_statistics().writes  # type: ignore[union-attr]
            assert 6 <= written <= 33
            # Every entry write is heard once by each client, from its key's master.
            await wait_until(lambda: fleet(a).keys_invalidated == written)
            await wait_until(lambda: fleet(b).keys_invalidated == written)
            for client in (a, b):
                stats = fleet(client)
                assert (stats.invalidations_stale, stats.rejected, stats.errors) == (0, 0, 0)
                assert not any(state_of(client, key).is_invalidated for key in keys)
        assert (origin_a.calls(), origin_b.calls()) == (
            dict.fromkeys(keys, 1),
            dict.fromkeys(keys, 0),
        )


class TestTopology:
    async def test_after_a_failover_a_write_on_the_new_master_still_reaches_l1(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """CLUSTER FAILOVER: resubscribed (all stale), tracking the new master, which is heard."""
        port, key = next(iter(one_key_per_master(redis_cluster, cluster_prefix).items()))
        replica = redis_cluster.replica_of(port)
        origin = Counted("v")

        def storage() -> RedisStorage:
            return RedisStorage(redis_cluster_url, timeout=2.0, ping_interval=0.1)

        async with open_clients(
            redis_cluster_url, 1, key_prefix=cluster_prefix, storage=storage
        ) as (a,):
            assert await a.fetch_query(sq.QueryOptions(key, origin)) == "v1"
            await wait_until(lambda: fleet(a).keys_invalidated == 1)
            command(replica, "CLUSTER", "FAILOVER")
            await wait_until(lambda: fleet(a).subscriptions >= 2 and fleet(a).connected)
            await wait_until(lambda: len(tracking_ids(replica)) == 1)
            # Resubscribed: what happened meanwhile is unknown, so the key is stale.
            assert state_of(a, key).is_invalidated
            assert await a.fetch_query(sq.QueryOptions(key, origin)) == "v1"
            await wait_until(lambda: a.get_query_data(key) == "v2")
            assert not state_of(a, key).is_invalidated
            stale = fleet(a).invalidations_stale
            await set_raw(redis_cluster_url, entry_name(cluster_prefix, key), "on the new master")
            await wait_until(lambda: state_of(a, key).is_invalidated)
            assert fleet(a).invalidations_stale == stale + 1
            assert origin.calls == 2
        await trio.to_thread.run_sync(redis_cluster.wait_ready)

    async def test_a_lost_tracking_connection_on_one_master_makes_everything_stale(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """One master's tracking connection killed: resubscribed, all stale, tracking back."""
        keys = one_key_per_master(redis_cluster, cluster_prefix)
        origin = PerKey()

        def storage() -> RedisStorage:
            return RedisStorage(redis_cluster_url, timeout=2.0, ping_interval=0.05)

        async with open_clients(
            redis_cluster_url, 1, key_prefix=cluster_prefix, storage=storage
        ) as (a,):
            await fetch_each(a, keys.values(), origin)
            killed = next(iter(keys))
            (tracking_id,) = tracking_ids(killed)
            command(killed, "CLIENT", "KILL", "ID", tracking_id)
            await wait_until(lambda: fleet(a).subscriptions == 2 and fleet(a).connected)
            assert all(state_of(a, key).is_invalidated for key in keys.values())
            assert len(tracking_ids(killed)) == 1
        assert origin.calls() == dict.fromkeys(keys.values(), 1)
