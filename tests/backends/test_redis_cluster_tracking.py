"""RedisClusterClient.subscribe_tracking on the session's real 3-master, 3-replica cluster.

Each master tracks its own keys, so a tracking subscription holds one per
master; these tests write through a plain second client and read what each
master says.  The failover test leaves the cluster with 3 masters and 3
replicas (their roles swapped).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from backends import (
    Invalidation,
    RedisClusterClient,
    StorageClosedError,
    StorageUnavailableError,
)
from backends._cluster_slots import key_slot
from tests.redis_cluster import RedisCluster, command, info, tracking_ids

pytestmark = pytest.mark.slow

DEADLINE = 10.0


def one_key_per_master(cluster: RedisCluster, prefix: str) -> dict[int, str]:
    """A key name under ``prefix`` on each master, by the master's port."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < cluster.masters:
        name = f"{prefix}{i}"
        found.setdefault(cluster.owner_of(key_slot(name)), name)
        i += 1
    return found


async def next_event(events: object) -> object:
    with trio.fail_after(DEADLINE):
        return await events.next_event()  # type: ignore[attr-defined]


class TestSubscribeTracking:
    async def test_a_write_on_each_master_is_heard_and_keys_outside_the_prefix_are_not(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """A write under the prefix on each master is heard, alone; then the channel's message."""
        tracked = f"{cluster_prefix}["
        inside = one_key_per_master(redis_cluster, tracked)
        outside = one_key_per_master(redis_cluster, f"{cluster_prefix}lease:")
        channel = f"{cluster_prefix}events"
        async with (
            RedisClusterClient.from_url(redis_cluster_url) as tracker,
            RedisClusterClient.from_url(redis_cluster_url) as writer,
            tracker.subscribe_tracking(channel, prefixes=[tracked]) as events,
        ):
            assert sorted(port for _, port in events.masters) == sorted(inside)
            assert (tracker.statistics().subscriptions, events.connected) == (4, True)
            for port, name in inside.items():
                # On one master, in order: the key outside the prefix is never named.
                await writer.execute("SET", outside[port], "x")
                await writer.execute("SET", name, "x")
                assert await next_event(events) == Invalidation((name.encode(),))
            await writer.publish(channel, b"hello")
            assert await next_event(events) == (channel.encode(), b"hello")

    async def test_a_flushall_on_a_master_is_heard_as_everything(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """FLUSHALL names no key: the master says everything it held changed."""
        tracked = f"{cluster_prefix}["
        async with (
            RedisClusterClient.from_url(redis_cluster_url) as tracker,
            tracker.subscribe_tracking("unused", prefixes=[tracked]) as events,
        ):
            await trio.to_thread.run_sync(command, redis_cluster.masters_ports()[0], "FLUSHALL")
            assert await next_event(events) == Invalidation(None)

    async def test_a_forged_invalidation_is_heard_once_per_master_as_malformed(
        self, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """PUBLISH on __redis__:invalidate reaches every node: each master's connection says so."""
        channel = f"{cluster_prefix}events"
        async with (
            RedisClusterClient.from_url(redis_cluster_url) as tracker,
            RedisClusterClient.from_url(redis_cluster_url) as forger,
            tracker.subscribe_tracking(channel, prefixes=[f"{cluster_prefix}["]) as events,
        ):
            await forger.publish("__redis__:invalidate", b"junk")
            for _ in range(3):
                assert await next_event(events) == Invalidation((), malformed=True)
            await forger.publish(channel, b"after")
            assert await next_event(events) == (channel.encode(), b"after")

    async def test_a_lost_tracking_connection_on_one_master_loses_the_subscription(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """The server closes one master's tracking connection: the next wait raises."""
        master = redis_cluster.masters_ports()[1]
        async with (
            RedisClusterClient.from_url(redis_cluster_url, ping_interval=0.05) as tracker,
            tracker.subscribe_tracking("unused", prefixes=[f"{cluster_prefix}["]) as events,
        ):
            (tracking_id,) = tracking_ids(master)
            command(master, "CLIENT", "KILL", "ID", tracking_id)
            with trio.fail_after(DEADLINE), pytest.raises(StorageUnavailableError, match="lost"):
                await events.next_event()
            assert events.connected is False
            with pytest.raises(StorageUnavailableError):  # and stays lost
                await events.next_event()
        with pytest.raises(StorageClosedError):
            await events.next_event()
        assert tracker.statistics().subscriptions == 0

    async def test_after_a_failover_it_is_lost_and_the_next_one_tracks_the_new_master(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """CLUSTER FAILOVER: the map names a new master, the subscription ends; anew, hears it."""
        tracked = f"{cluster_prefix}["
        port, name = next(iter(one_key_per_master(redis_cluster, tracked).items()))
        replica = redis_cluster.replica_of(port)
        async with (
            RedisClusterClient.from_url(redis_cluster_url, ping_interval=0.1) as tracker,
            RedisClusterClient.from_url(redis_cluster_url) as writer,
        ):
            async with tracker.subscribe_tracking("unused", prefixes=[tracked]) as events:
                command(replica, "CLUSTER", "FAILOVER")
                with (
                    trio.fail_after(DEADLINE),
                    pytest.raises(StorageUnavailableError, match="the masters changed"),
                ):
                    while True:
                        await events.next_event()
            assert info(replica, "replication")["role"] == "master"
            await trio.to_thread.run_sync(redis_cluster.wait_ready)
            async with tracker.subscribe_tracking("unused", prefixes=[tracked]) as events:
                assert ("127.0.0.1", replica) in events.masters
                assert ("127.0.0.1", port) not in events.masters
                await writer.execute("SET", name, "on the new master")
                assert await next_event(events) == Invalidation((name.encode(),))

    async def test_closing_the_client_closes_the_subscription(
        self, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """A reader waiting when the client closes gets StorageClosedError, as later ones do."""
        async with (
            RedisClusterClient.from_url(redis_cluster_url) as tracker,
            tracker.subscribe_tracking("unused", prefixes=[f"{cluster_prefix}["]) as events,
        ):
            async with trio.open_nursery() as nursery:

                async def close_soon() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    await tracker.aclose()

                nursery.start_soon(close_soon)
                with trio.fail_after(DEADLINE), pytest.raises(StorageClosedError):
                    await events.next_event()
            assert events.connected is False
            with pytest.raises(StorageClosedError):
                await events.next_event()

    async def test_bad_arguments_are_refused_before_connecting(self) -> None:
        """No channel, no prefix, overlapping prefixes: ValueError, nothing reached."""
        async with RedisClusterClient.from_url("redis+cluster://127.0.0.1:1") as client:
            for channels, prefixes, message in (
                ((), ["p:"], "at least one channel"),
                (("c",), [], "at least one key prefix"),
                (("c",), ["p:", "p:["], "overlap"),
            ):
                with pytest.raises(ValueError, match=message):
                    async with client.subscribe_tracking(*channels, prefixes=prefixes):
                        pass  # pragma: no cover
