"""RedisStorage on a cluster under load while the cluster changes: no caller error, no lost write.

Twenty tasks write, read back and batch-read their own keys (spread over every
master, plus a few in one hash-tagged slot) while a master is failed over by
hand, killed, or has a slot migrated away.  Every write a task saw
acknowledged must be read back, during the load and after it.  These run on
the session's cluster and leave it with 3 masters and 3 replicas.
"""

from __future__ import annotations

import time

import attrs
import trio

from backends import RedisStorage
from backends._cluster_slots import key_slot
from tests.backends.test_redis_cluster import finish_move, migrate_keys
from tests.redis_cluster import RedisCluster, command, info

WORKERS = 20
KEYS_PER_WORKER = 4
TAG = "{moving}"
"""The hash tag of the keys whose slot is migrated."""
STORE_TIMEOUT = 10.0
"""Seconds a store call may ride out a failover (a dead master is replaced within ~3 s)."""
CHANGE_DEADLINE = 20.0


@attrs.define
class Load:
    """Tasks writing and reading their own keys; what they were told, and what went wrong."""

    store: RedisStorage
    keys: list[list[str]]
    acked: dict[str, int] = attrs.field(factory=dict)
    errors: list[str] = attrs.field(factory=list)
    operations: int = 0

    async def run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for own in self.keys:
                nursery.start_soon(self._worker, own, stop)

    async def _worker(self, own: list[str], stop: trio.Event) -> None:
        version = 0
        while not stop.is_set():
            version += 1
            key = own[version % len(own)]
            value = b"%d" % version
            try:
                await self.store.set(key, value)
                self.acked[key] = version
                got = await self.store.get(key)
                if got != value:
                    self.errors.append(f"{key}: wrote {value!r}, read {got!r}")
                values = await self.store.get_many(own)
                expected = [b"%d" % self.acked[k] if k in self.acked else None for k in own]
                if values != expected:
                    self.errors.append(f"get_many {own}: {values} != {expected}")
            except Exception as exc:  # the test's point: none may reach a caller
                self.errors.append(repr(exc))
            self.operations += 1

    async def check_every_acked_write(self, url: str, prefix: str) -> None:
        async with RedisStorage(url, prefix=prefix, timeout=STORE_TIMEOUT) as fresh:
            names = sorted(self.acked)
            values = await fresh.get_many(names)
        lost = {
            name: value
            for name, value in zip(names, values, strict=True)
            if value != b"%d" % self.acked[name]
        }
        assert lost == {}


def make_load(store: RedisStorage, cluster: RedisCluster) -> Load:
    keys = [
        [f"w{worker}:{TAG if i == 0 else ''}k{i}" for i in range(KEYS_PER_WORKER)]
        for worker in range(WORKERS)
    ]
    owners = {cluster.owner_of(key_slot(store.prefix + k)) for own in keys for k in own}
    assert len(owners) == 3
    return Load(store, keys)


async def under_load(
    cluster: RedisCluster, url: str, prefix: str, change: object
) -> tuple[Load, RedisStorage]:
    """Run the load, ``await change(load)`` during it, then check every acknowledged write."""
    store = RedisStorage(url, prefix=prefix, timeout=STORE_TIMEOUT)
    load = make_load(store, cluster)
    stop = trio.Event()
    async with store:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run, stop)
            await wait_for_operations(load, 200)
            with trio.fail_after(CHANGE_DEADLINE):
                await change(load)  # type: ignore[operator]
            await wait_for_operations(load, load.operations + 200)
            stop.set()
        assert load.errors == []
        await load.check_every_acked_write(url, prefix)
    return load, store


async def wait_for_operations(load: Load, count: int) -> None:
    with trio.fail_after(CHANGE_DEADLINE):
        while load.operations < count:  # noqa: ASYNC110 - the load runs against real servers
            await trio.sleep(0.01)


async def wait_for(condition: object, what: str) -> None:
    """Poll ``condition()`` (in a thread: it talks to the servers synchronously)."""
    deadline = time.monotonic() + CHANGE_DEADLINE
    while not await trio.to_thread.run_sync(condition):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await trio.sleep(0.05)


class TestChangesUnderLoad:
    async def test_a_manual_failover(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """CLUSTER FAILOVER on a replica: callers are redirected (MOVED), nobody fails."""
        master = redis_cluster.owner_of(key_slot(f"{cluster_prefix}w0:k1"))
        replica = redis_cluster.replica_of(master)

        async def change(load: Load) -> None:
            await trio.to_thread.run_sync(command, replica, "CLUSTER", "FAILOVER")
            await wait_for(lambda: info(replica, "replication")["role"] == "master", "failover")

        _load, store = await under_load(redis_cluster, redis_cluster_url, cluster_prefix, change)
        assert store.redis.statistics().moved >= 1  # type: ignore[attr-defined]
        await trio.to_thread.run_sync(redis_cluster.wait_ready)

    async def test_a_slot_migrated_away(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """IMPORTING/MIGRATING + MIGRATE while callers use the slot: ASK is followed."""
        slot = key_slot(TAG)
        source = redis_cluster.owner_of(slot)
        target = next(port for port in redis_cluster.masters_ports() if port != source)

        async def change(load: Load) -> None:
            source_id = command(source, "CLUSTER", "MYID")
            target_id = command(target, "CLUSTER", "MYID")
            assert isinstance(source_id, bytes) and isinstance(target_id, bytes)
            command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            await trio.to_thread.run_sync(migrate_keys, source, target, slot)
            # Half-way: the keys are on the target, the slot still on the source.
            await wait_for_operations(load, load.operations + 200)
            await trio.to_thread.run_sync(finish_move, redis_cluster, slot, target_id)

        _load, store = await under_load(redis_cluster, redis_cluster_url, cluster_prefix, change)
        stats = store.redis.statistics()  # type: ignore[attr-defined]
        assert stats.asked >= 1
        assert redis_cluster.owner_of(slot) == target

    async def test_a_master_killed(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """SIGKILL a master: its replica takes over; callers wait it out, no write is lost."""
        master = redis_cluster.owner_of(key_slot(f"{cluster_prefix}w0:k1"))
        replica = redis_cluster.replica_of(master)
        killed = redis_cluster.node(master)

        async def change(load: Load) -> None:
            killed.kill()
            await wait_for(lambda: info(replica, "replication")["role"] == "master", "failover")

        try:
            _load, store = await under_load(
                redis_cluster, redis_cluster_url, cluster_prefix, change
            )
            assert store.redis.statistics().retries >= 1  # type: ignore[attr-defined]
        finally:
            # Back as a replica of the master that replaced it: the cluster is whole again.
            killed.restart()
            await trio.to_thread.run_sync(redis_cluster.wait_ready)
