"""Broadcast of invalidations, removals and new data, in one trio.run on one real redis-server.

Each client has its own connections, as separate processes would; messages
go through the server's pub/sub.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import stackquery as sq
from stackquery._keys import canonical_key
from stackquery.fleet._fleet import channel_name
from tests.redis_server import RedisServer
from tests.stackquery.fleet_support import (
    Counted,
    fleet,
    fleet_config,
    open_clients,
    raw_redis,
    redis_command,
    wait_until,
)

pytestmark = pytest.mark.slow

CHANNEL = channel_name("sq:")


def l2_name(key: tuple[Any, ...]) -> str:
    """The key's entry name in Redis (the default ``key_prefix``)."""
    return "sq:" + canonical_key(key)[1]


def l2_stats(client: sq.QueryClient) -> sq.L2Statistics:
    stats = client.l2_statistics()
    assert stats is not None
    return stats


async def read_entry(url: str, key: tuple[Any, ...]) -> sq.StoredEntry:
    """The key's L2 entry as it is in Redis now (it must be there)."""
    raw = await redis_command(url, "GET", l2_name(key))
    assert isinstance(raw, bytes)
    return sq.unpack_entry(raw, sq.serializers.json)


def state_of(client: sq.QueryClient, key: tuple[Any, ...]) -> sq.QueryState[Any]:
    """The key's state in the client's L1 (it must be there)."""
    state = client.get_query_state(key)
    assert state is not None
    return state


class TestChanges:
    async def test_set_query_data_reaches_the_other_clients_observer_without_its_origin(
        self, redis_url: str
    ) -> None:
        """A value set in A shows in B's observer; B's origin is not called again."""
        key = ("flags",)
        origin_a, origin_b = Counted("a"), Counted("b")
        async with open_clients(redis_url, 2) as (a, b):
            seen: list[Any] = []
            observer = b.watch(sq.QueryOptions(key, origin_b))
            unsubscribe = observer.subscribe(lambda s: seen.append(s.data))
            await wait_until(lambda: seen[-1:] == ["b1"])
            assert await a.fetch_query(sq.QueryOptions(key, origin_a)) == "b1"
            await a.set_query_data(key, "set in a")
            await wait_until(lambda: seen[-1:] == ["set in a"])
            unsubscribe()
            assert state_of(b, key).is_stale is False
            assert (origin_a.calls, origin_b.calls) == (0, 1)

    async def test_remove_queries_drops_the_key_everywhere(self, redis_url: str) -> None:
        """Removing a key in A removes it from B's L1 (and from L2)."""
        key = ("user", 1)
        origin = Counted("v")
        async with open_clients(redis_url, 2) as (a, b):
            await a.fetch_query(sq.QueryOptions(key, origin))
            await b.fetch_query(sq.QueryOptions(key, origin))
            assert await a.remove_queries(("user",)) == 1
            await wait_until(lambda: b.get_query_state(key) is None)
            assert await b.fetch_query(sq.QueryOptions(key, origin)) == "v2"
            assert origin.calls == 2

    async def test_an_invalidation_reaches_only_the_matching_keys(self, redis_url: str) -> None:
        """A prefix invalidation in A marks B's keys under the prefix and no others."""
        origin = Counted("v")
        keys = [("user", 1), ("user", 2), ("users", 1), ("team", 1)]
        async with open_clients(redis_url, 2) as (a, b):
            for key in keys:
                await b.fetch_query(sq.QueryOptions(key, origin))
            assert await a.invalidate_queries(("user",)) == 0
            await wait_until(lambda: fleet(b).received == 1)
            marks = {key: state_of(b, key).is_invalidated for key in keys}
            assert marks == {
                ("user", 1): True,
                ("user", 2): True,
                ("users", 1): False,
                ("team", 1): False,
            }

    async def test_a_receiver_marks_its_l1_only_and_writes_nothing_to_l2(
        self, redis_url: str
    ) -> None:
        """B, told of A's invalidation, marks the key in L1; L2 keeps B's entry as it was."""
        key = ("user", 3)
        origin_b = Counted("b")
        async with open_clients(redis_url, 2, redis_tracking=False) as (a, b):
            assert await b.fetch_query(sq.QueryOptions(key, origin_b)) == "b1"
            await wait_until(lambda: (l2_stats(b).writes, l2_stats(b).pending_writes) == (1, 0))
            await a.invalidate_queries(("user",))
            await wait_until(lambda: state_of(b, key).is_invalidated)
            # Marked and (were it written) queued in one step: nothing was queued.
            assert (l2_stats(b).pending_writes, l2_stats(b).writes) == (0, 1)
            entry = await read_entry(redis_url, key)
            assert (entry.value, entry.invalidated) == ("b1", False)
            assert origin_b.calls == 1

    async def test_an_invalidation_heard_does_not_clobber_newer_data_in_l2(
        self, redis_url: str
    ) -> None:
        """Another process wrote newer data to L2; A hears C's invalidation: L2 keeps the newer."""
        key = ("user", 4)
        origin_a, origin_c = Counted("a"), Counted("c")
        async with open_clients(redis_url, 3, redis_tracking=False) as (a, _b, c):
            assert await a.fetch_query(sq.QueryOptions(key, origin_a)) == "a1"
            await wait_until(lambda: (l2_stats(a).writes, l2_stats(a).pending_writes) == (1, 0))
            held = state_of(a, key).data_updated_at
            assert held is not None
            # The other process's write, not announced yet (its message is on the way).
            newer = sq.pack_entry(
                "newer", data_updated_at=held + 1.0, serializer=sq.serializers.json
            )
            await redis_command(redis_url, "SET", l2_name(key), newer)
            assert await c.invalidate_queries(("user",)) == 0  # C holds nothing
            await wait_until(lambda: fleet(a).received == 1)
            assert state_of(a, key).is_invalidated is True
            assert (l2_stats(a).pending_writes, l2_stats(a).writes) == (0, 1)
            entry = await read_entry(redis_url, key)
            assert (entry.value, entry.data_updated_at, entry.invalidated) == (
                "newer",
                held + 1.0,
                False,
            )
            # A's next read serves its stale copy and refetches, which reads L2
            # first and finds the newer entry there: no origin call.
            assert await a.fetch_query(sq.QueryOptions(key, origin_a)) == "a1"
            await wait_until(lambda: not state_of(a, key).is_invalidated)
            assert (a.get_query_data(key), origin_a.calls, origin_c.calls) == ("newer", 1, 0)


class TestConnection:
    async def test_a_resubscription_marks_everything_stale_and_refetches_observed_keys(
        self, redis_url: str
    ) -> None:
        """Pub/sub dropped and back: every held key is stale, observed keys refetch."""
        held, watched = Counted("h"), Counted("w")
        async with open_clients(redis_url, 1) as (a,):
            await a.fetch_query(sq.QueryOptions(("held",), held))
            seen: list[Any] = []
            unsubscribe = a.watch(sq.QueryOptions(("watched",), watched)).subscribe(
                lambda s: seen.append(s.data)
            )
            await wait_until(lambda: seen[-1:] == ["w1"])
            assert state_of(a, ("held",)).is_stale is False
            redis = await raw_redis(redis_url)
            try:
                assert await redis.execute("CLIENT", "KILL", "TYPE", "pubsub") == 1
            finally:
                await redis.aclose()
            await wait_until(lambda: fleet(a).subscriptions == 2 and fleet(a).connected)
            assert state_of(a, ("held",)).is_stale is True
            await wait_until(lambda: seen[-1:] == ["w2"])
            unsubscribe()
            assert (held.calls, watched.calls) == (1, 2)

    async def test_a_refused_publish_is_counted_and_dropped(self, redis_url: str) -> None:
        """PUBLISH refused by Redis: the error is counted, the message dropped, the client lives."""
        origin = Counted("v")
        redis = await raw_redis(redis_url)
        try:
            async with open_clients(redis_url, 1) as (a,):
                await redis.execute("ACL", "SETUSER", "default", "-publish")
                await a.fetch_query(sq.QueryOptions(("user", 1), origin))
                await a.invalidate_queries(("user",))
                await wait_until(lambda: fleet(a).errors == 2)
                assert fleet(a).published == 0
                await redis.execute("ACL", "SETUSER", "default", "+publish")
                await a.invalidate_queries(("user",))
                await wait_until(lambda: fleet(a).published == 1)
                assert fleet(a).errors == 2
        finally:
            await redis.aclose()

    async def test_redis_down_degrades_to_one_process_and_recovers_by_itself(
        self, redis_server: RedisServer
    ) -> None:
        """Redis killed: fetches go to the origin; restarted: broadcast works again by itself."""
        origin = Counted("v")
        url = redis_server.url
        async with open_clients(url, 2, lease_time=1.0) as (a, b):
            redis_server.kill()
            await wait_until(lambda: not fleet(a).connected and not fleet(b).connected)
            assert await a.fetch_query(sq.QueryOptions(("user", 1), origin)) == "v1"
            assert await b.fetch_query(sq.QueryOptions(("user", 1), origin)) == "v2"
            assert await a.invalidate_queries(("user",)) == 1
            assert state_of(b, ("user", 1)).is_invalidated is False
            redis_server.restart()
            await wait_until(lambda: fleet(a).subscriptions == 2 and fleet(b).subscriptions == 2)
            assert state_of(b, ("user", 1)).is_stale is True
            await b.invalidate_queries(("user",))
            await wait_until(lambda: state_of(a, ("user", 1)).is_invalidated)


class TestMessages:
    async def test_malformed_messages_are_ignored(self, redis_url: str) -> None:
        """Foreign or damaged messages never crash a client; valid ones still apply."""
        key = ("user", 1)
        async with open_clients(redis_url, 1) as (a,):
            await a.fetch_query(sq.QueryOptions(key, Counted("v")))
            redis = await raw_redis(redis_url)
            try:
                for message in [
                    b"not json",
                    b"[1, 2]",
                    b'{"n": "x", "op": "inv", "p": 5, "x": false, "k": []}',
                    b'{"n": "x", "op": "inv", "p": null, "x": true, "k": [7]}',
                    b'{"n": "x", "op": "upd", "k": [["a"]]}',
                    b'{"n": "x", "op": "upd", "k": [[1, "a"]]}',
                    b'{"n": "x", "op": "del", "k": 5}',
                    b'{"n": "x", "op": "del", "k": [null]}',
                    b'{"n": "x", "op": "later-version", "k": []}',
                ]:
                    await redis.publish(CHANNEL, message)
                valid = {"n": "x", "op": "inv", "p": '["user"', "x": False, "k": []}
                await redis.publish(CHANNEL, orjson.dumps(valid))
            finally:
                await redis.aclose()
            await wait_until(lambda: state_of(a, key).is_invalidated)
            assert fleet(a).received == 2

    async def test_a_client_ignores_its_own_messages(self, redis_url: str) -> None:
        """A's own invalidation comes back on the channel and is not applied twice."""
        async with open_clients(redis_url, 2) as (a, b):
            await a.invalidate_queries(("user",))
            await wait_until(lambda: fleet(b).received == 1)
            assert (fleet(a).published, fleet(a).received) == (1, 0)


class TestBroadcastOff:
    async def test_broadcast_false_publishes_nothing_and_queues_nothing(
        self, redis_url: str
    ) -> None:
        """``broadcast=False``, single flight on: leased fetches announce nothing, queue nothing."""
        origin = Counted("v")
        async with (
            open_clients(redis_url, 1) as (b,),
            sq.open_query_client(fleet_config(redis_url, broadcast=False)) as a,
        ):
            for number in range(3):
                await a.fetch_query(sq.QueryOptions(("user", number), origin))
            await wait_until(lambda: a.statistics().active_actors == 0)
            await a.invalidate_queries(("user",))
            assert fleet(a).leases_taken == 3
            assert fleet(a).published == 0
            assert a._fleet is not None and a._fleet._outbox == []  # nothing piles up unsent
            assert fleet(b).received == 0
