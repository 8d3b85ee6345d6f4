"""RedisClusterClient and RedisStorage on a real 3-master, 3-replica cluster (the session's).

Tests keep apart by their own key prefix; the ones that move slots put them back.
"""

from __future__ import annotations

import pytest
import trio

from backends import (
    CrossSlotError,
    RedisClient,
    RedisClusterClient,
    RedisCommandRefusedError,
    RedisReplyError,
    RedisStorage,
    StorageUnavailableError,
)
from backends._cluster_slots import (
    MalformedTopologyError,
    command_keys,
    key_slot,
    parse_redirect,
    parse_shards,
    parse_slots,
)
from backends._cluster_topology import cluster_seeds
from tests.redis_cluster import RedisCluster, command

DEADLINE = 10.0


def keys_on_every_master(cluster: RedisCluster, prefix: str, count: int = 30) -> list[str]:
    """``count`` key names under ``prefix``; the test checks they span every master."""
    names = [f"{prefix}k{i}" for i in range(count)]
    owners = {cluster.owner_of(key_slot(name)) for name in names}
    assert len(owners) == cluster.masters
    return names


class TestUrl:
    def test_seeds_from_a_cluster_url(self) -> None:
        """Every host:port of the URL is a seed; credentials apply to each."""
        seeds = cluster_seeds("redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001")
        assert [(s.host, s.port, s.username, s.password) for s in seeds] == [
            ("10.0.0.1", 7000, "u", "pw"),
            ("10.0.0.2", 7001, "u", "pw"),
        ]

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("redis://127.0.0.1:7000", "starts with redis\\+cluster://"),
            ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
            ("redis+cluster:///0", "at least one host:port"),
        ],
    )
    def test_bad_urls_are_refused(self, url: str, message: str) -> None:
        """Another scheme, another database, no host: a ValueError naming the problem."""
        with pytest.raises(ValueError, match=message):
            RedisClusterClient.from_url(url)


class TestSlots:
    def test_hash_tags_choose_the_slot(self) -> None:
        """Keys with one {tag} share a slot (what scripts on two keys need)."""
        assert key_slot("{user}:a") == key_slot("{user}:b") == key_slot("user")
        assert key_slot(b"foo") == 12182

    def test_command_keys(self) -> None:
        """Script keys are read from numkeys; keyless commands have none."""
        assert command_keys("EVAL", ("EVAL", "s", 2, "a", "b", "arg")) == ("a", "b")
        assert command_keys("MGET", ("MGET", "a", "b")) == ("a", "b")
        assert command_keys("PUBLISH", ("PUBLISH", "ch", "m")) == ()
        assert command_keys("SET", ("SET", "k", "v", "PX", 5)) == ("k",)

    @pytest.mark.parametrize(
        "reply",
        [
            b"junk",
            [[b"slots", [0, 99999], b"nodes", []]],
            [[b"slots", [0], b"nodes", []]],
            [[b"slots", [0, 5], b"nodes", [[b"id", b"x", b"port", b"no", b"health", b"online"]]]],
            [[b"slots", [0, 5], b"nodes", [[b"odd"]]]],
        ],
    )
    def test_a_malformed_shards_reply_is_refused(self, reply: object) -> None:
        """A CLUSTER SHARDS reply read from the network is checked before it is used."""
        with pytest.raises(MalformedTopologyError):
            parse_shards(reply, default_host="h")  # type: ignore[arg-type]

    def test_a_malformed_slots_reply_is_refused(self) -> None:
        """So is a CLUSTER SLOTS reply."""
        with pytest.raises(MalformedTopologyError):
            parse_slots([[0, 16383, [b"h", 99999]]], default_host="h")

    def test_redirects_are_parsed_or_ignored(self) -> None:
        """MOVED/ASK text gives slot and address; anything else gives None."""
        assert parse_redirect("3999 127.0.0.1:6381") == (3999, ("127.0.0.1", 6381))
        assert parse_redirect("99999 127.0.0.1:6381") is None
        assert parse_redirect("nonsense") is None


class TestClient:
    async def test_every_key_reaches_its_master(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """Keys on all three masters are set and read back; each lives on its slot's master."""
        names = keys_on_every_master(redis_cluster, cluster_prefix)
        async with RedisClusterClient.from_url(redis_cluster_url) as redis:
            for name in names:
                assert await redis.execute("SET", name, name) == b"OK"
            assert await redis.execute("MGET", *names) == [n.encode() for n in names]
            assert await redis.execute("EXISTS", *names, "absent") == len(names)
            assert await redis.execute("UNLINK", *names) == len(names)
            stats = redis.statistics()
        assert (stats.primaries, stats.moved, stats.asked) == (3, 0, 0)
        for name in names:
            assert command(redis_cluster.owner_of(key_slot(name)), "EXISTS", name) == 0

    async def test_a_pipeline_spans_masters_and_keeps_order(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """A pipeline over every master answers in the order of its commands."""
        names = keys_on_every_master(redis_cluster, cluster_prefix)
        async with RedisClusterClient.from_url(redis_cluster_url) as redis:
            await redis.pipeline([("SET", name, f"v{i}") for i, name in enumerate(names)])
            replies = await redis.pipeline(
                [c for name in names for c in (("GET", name), ("STRLEN", name))]
            )
            assert replies[::2] == [f"v{i}".encode() for i in range(len(names))]
            assert replies[1::2] == [len(f"v{i}") for i in range(len(names))]
            mixed = await redis.pipeline(
                [("GET", names[0]), ("LPUSH", names[0], "x"), ("GET", names[1])],
                raise_on_error=False,
            )
            assert mixed[0] == b"v0" and isinstance(mixed[1], Exception) and mixed[2] == b"v1"
            with pytest.raises(RedisReplyError, match="WRONGTYPE"):
                await redis.pipeline([("LPUSH", names[0], "x")])

    async def test_cross_slot_scripts_and_transactions_are_refused(
        self, redis_cluster_url: str
    ) -> None:
        """A script on keys of two slots, MULTI, SELECT and SCAN are refused before sending."""
        async with RedisClusterClient.from_url(redis_cluster_url) as redis:
            with pytest.raises(CrossSlotError, match="EVAL names keys in different hash slots"):
                await redis.execute("EVAL", "return 1", 2, "a", "b")
            assert await redis.execute("EVAL", "return 1", 2, "{t}a", "{t}b") == 1
            for name in ("MULTI", "SELECT", "SCAN"):
                with pytest.raises(RedisCommandRefusedError):
                    await redis.execute(name, 0)

    async def test_a_moved_slot_is_followed(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """A client whose map is stale is told MOVED, reads the map again and gets its value."""
        name = f"{cluster_prefix}{{moved}}"
        slot = key_slot(name)
        async with RedisClusterClient.from_url(redis_cluster_url) as redis:
            await redis.execute("SET", name, "before")
            source = redis_cluster.owner_of(slot)
            target = next(p for p in redis_cluster.masters_ports() if p != source)
            move_slot(redis_cluster, slot, source, target)
            try:
                assert await redis.execute("GET", name) == b"before"
                assert redis.statistics().moved == 1
            finally:
                move_slot(redis_cluster, slot, target, source)

    async def test_ask_and_tryagain_during_a_migration(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """Mid-migration: a moved key is read after ASK; MGET over the split slot backs off."""
        first, second = f"{cluster_prefix}{{ask}}1", f"{cluster_prefix}{{ask}}2"
        slot = key_slot(first)
        async with RedisClusterClient.from_url(redis_cluster_url, timeout=0.3) as redis:
            await redis.execute("MSET", first, "a", second, "b")
            source = redis_cluster.owner_of(slot)
            target = next(p for p in redis_cluster.masters_ports() if p != source)
            source_id = command(source, "CLUSTER", "MYID")
            target_id = command(target, "CLUSTER", "MYID")
            assert isinstance(source_id, bytes) and isinstance(target_id, bytes)
            command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", first)
            try:
                assert await redis.execute("GET", first) == b"a"
                assert await redis.execute("GET", second) == b"b"
                assert redis.statistics().asked == 1
                with pytest.raises(RedisReplyError, match="TryAgainError"):
                    await redis.execute("MGET", first, second)
                assert redis.statistics().retries >= 2
            finally:
                migrate_keys(source, target, slot)
                finish_move(redis_cluster, slot, target_id)
            assert await redis.execute("MGET", first, second) == [b"a", b"b"]

    async def test_every_subscriber_hears_a_message_published_anywhere(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """Six subscriptions, one per node (replicas too), all hear one publish."""
        channel = f"{cluster_prefix}events"
        nodes = len(redis_cluster.nodes)
        heard: list[bytes] = []
        ready = trio.Semaphore(0)
        async with (
            RedisClusterClient.from_url(redis_cluster_url) as subscriber,
            RedisClusterClient.from_url(redis_cluster_url) as publisher,
            trio.open_nursery() as nursery,
        ):

            async def listen() -> None:
                async with subscriber.subscribe(channel) as messages:
                    ready.release()
                    async for _channel, data in messages:
                        heard.append(data)
                        return

            for _ in range(nodes):
                nursery.start_soon(listen)
            with trio.fail_after(DEADLINE):
                for _ in range(nodes):
                    await ready.acquire()
            counts = [
                command(port, "PUBSUB", "NUMSUB", channel)[1]  # type: ignore[index]
                for port in redis_cluster.ports
            ]
            assert counts == [1] * nodes
            assert await publisher.count_subscribers(channel) == nodes
            await publisher.publish(channel, b"hello")
            with trio.fail_after(DEADLINE):
                while len(heard) < nodes:  # noqa: ASYNC110 - messages come from the servers
                    await trio.sleep(0.005)
        assert heard == [b"hello"] * nodes


class TestAskingInAPipeline:
    async def test_asking_is_allowed_before_a_command_of_the_same_pipeline(
        self, redis_url: str
    ) -> None:
        """ASKING then the command it is for, written together: nobody else's command between."""
        async with RedisClient.from_url(redis_url) as redis:
            replies = await redis.pipeline([("ASKING",), ("PING",)], raise_on_error=False)
        assert isinstance(replies[0], Exception)  # not a cluster node: the server says so
        assert replies[1] == b"PONG"

    async def test_a_trailing_asking_is_refused(self, redis_url: str) -> None:
        """ASKING last would apply to another caller's command: refused, nothing sent."""
        async with RedisClient.from_url(redis_url) as redis:
            with pytest.raises(RedisCommandRefusedError, match=r"^ASKING would apply"):
                await redis.pipeline([("PING",), ("ASKING",)])
            with pytest.raises(RedisCommandRefusedError, match=r"^ASKING would apply"):
                await redis.execute("ASKING")


class TestStorage:
    async def test_get_many_set_many_and_delete_prefix_span_masters(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """The batch operations split per slot; delete_prefix removes on every master."""
        names = keys_on_every_master(redis_cluster, cluster_prefix, count=600)
        keys = [name.removeprefix(cluster_prefix) for name in names]
        async with RedisStorage(redis_cluster_url, prefix=cluster_prefix, batch_size=100) as store:
            await store.set_many({key: key.encode() for key in keys})
            assert await store.get_many([*keys, "absent"]) == [k.encode() for k in keys] + [None]
            assert await store.delete_prefix("k") == len(keys)
            assert await store.get_many(keys) == [None] * len(keys)

    async def test_a_master_that_cannot_be_walked_fails_delete_prefix(
        self, redis_cluster: RedisCluster, redis_cluster_url: str, cluster_prefix: str
    ) -> None:
        """A frozen master makes delete_prefix raise; it never reports a partial count."""
        async with RedisStorage(redis_cluster_url, prefix=cluster_prefix, timeout=0.3) as store:
            await store.set("k", b"v")
            frozen = redis_cluster.node(redis_cluster.masters_ports()[0])
            frozen.pause()
            try:
                with pytest.raises(StorageUnavailableError):
                    await store.delete_prefix("")
            finally:
                frozen.resume()
        redis_cluster.wait_ready()


def move_slot(cluster: RedisCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` and its keys from master ``source`` to ``target``, as resharding does."""
    source_id = command(source, "CLUSTER", "MYID")
    target_id = command(target, "CLUSTER", "MYID")
    assert isinstance(source_id, bytes) and isinstance(target_id, bytes)
    command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    migrate_keys(source, target, slot)
    finish_move(cluster, slot, target_id)


def migrate_keys(source: int, target: int, slot: int) -> int:
    """MIGRATE every key of ``slot`` from ``source`` to ``target``; return how many."""
    moved = 0
    while True:
        names = command(source, "CLUSTER", "GETKEYSINSLOT", slot, 100)
        assert isinstance(names, list)
        if not names:
            return moved
        command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *names)
        moved += len(names)


def finish_move(cluster: RedisCluster, slot: int, target_id: bytes) -> None:
    """Give ``slot`` to ``target_id`` on every master, then wait for the cluster to agree."""
    for port in cluster.masters_ports():
        command(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
    cluster.wait_ready()
