"""Specification of the L2 envelope in the client: bad entries are misses, bad values stay in L1."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import ControlledStorage, entry_bytes, l2_warnings, store_key

KEY = ("user", 1)
L2_KEY = 'sq:["user",1]'

MSGPACK_ENTRY = sq.pack_entry("old", data_updated_at=1.0, serializer=sq.serializers.msgpack)

CORRUPT_ENTRIES = {
    "foreign text": (b"hello, world", "foreign"),
    "foreign json": (b'{"user": 1}', "foreign"),
    "random bytes": (bytes(range(256)), "foreign"),
    "empty": (b"", "truncated"),
    "cut text envelope": (entry_bytes("old", at=1.0)[:20], "malformed"),
    "cut binary header": (MSGPACK_ENTRY[:10], "truncated"),
    "cut binary payload": (MSGPACK_ENTRY[:-1], "truncated"),
    "another serializer": (MSGPACK_ENTRY, "serializer-mismatch"),
    "a future format": (b'{"sq":2,"s":"json","t":1.0,"i":false,"d":"old"}', "unsupported-version"),
    "mistyped fields": (b'{"sq":1,"s":"json","t":"noon","i":false,"d":"old"}', "malformed"),
}


def options(origin: Any, key: tuple[Any, ...] = KEY, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


def config(store: Any, **kwargs: Any) -> sq.QueryClientConfig:
    return sq.QueryClientConfig(storage=store, **kwargs)


class FragileSerializer:
    """Encodes text as UTF-8; decoding always fails (a serializer with a bug)."""

    name = "fragile"

    def dumps(self, value: Any) -> bytes:
        return str(value).encode()

    def loads(self, data: bytes) -> Any:
        raise RuntimeError("fragile cannot decode anything")


class TestCorruptEntries:
    @pytest.mark.parametrize(("raw", "reason"), CORRUPT_ENTRIES.values(), ids=CORRUPT_ENTRIES)
    async def test_a_corrupt_entry_is_a_counted_and_logged_miss(
        self,
        raw: bytes,
        reason: str,
        autojump_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A bad entry makes the fetch call query_fn once, counted as corrupt and logged."""
        store = ControlledStorage()
        await store.memory.set(L2_KEY, raw)
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(options(origin)) == "v1"
            assert origin.calls == 1
            stats = client.l2_statistics()
            assert stats is not None
            assert (stats.reads, stats.read_batches, stats.hits, stats.misses) == (1, 1, 0, 1)
            assert (stats.corrupt, stats.errors) == (1, 0)
        (warning,) = l2_warnings(caplog)
        assert re.fullmatch(rf"L2 entry ignored as a miss: corrupt entry \({reason}\): .+", warning)

    @pytest.mark.parametrize(("raw", "reason"), CORRUPT_ENTRIES.values(), ids=CORRUPT_ENTRIES)
    async def test_the_fetched_value_replaces_a_corrupt_entry(
        self, raw: bytes, reason: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After the miss, the value fetched from the origin is what L2 holds."""
        store = ControlledStorage()
        await store.memory.set(L2_KEY, raw)
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(Origin()))
            fetched_at = client.get_query_state(KEY).data_updated_at  # type: ignore[union-attr]
        entry = await store.entry(L2_KEY)
        assert entry == sq.StoredEntry("v1", fetched_at, False, "json")

    async def test_prefetch_and_observers_never_see_a_corrupt_entry(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query and a subscriber of keys with bad entries get the origin's values."""
        store = ControlledStorage()
        await store.memory.set('sq:["a"]', b"\x00garbage")
        await store.memory.set('sq:["b"]', b'{"sq":1,')
        first, second = Origin("a1"), Origin("b1")
        seen: list[sq.QueryState[Any]] = []
        async with sq.open_query_client(config(store)) as client:
            await client.prefetch_query(options(first, ("a",)))
            client.watch(options(second, ("b",))).subscribe(seen.append)
            await wait_all_tasks_blocked()
            assert client.get_query_data(("a",)) == "a1"
            assert seen[-1].status is sq.QueryStatus.SUCCESS and seen[-1].data == "b1"
            assert (first.calls, second.calls) == (1, 1)
            stats = client.l2_statistics()
            assert stats is not None and (stats.corrupt, stats.misses, stats.hits) == (2, 2, 0)

    async def test_a_payload_the_serializer_cannot_decode_is_a_corrupt_miss(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A serializer whose loads raises makes the entry a miss, not an error in the caller."""
        fragile = FragileSerializer()
        store = ControlledStorage()
        await store.memory.set(
            L2_KEY, sq.pack_entry("old", data_updated_at=1.0, serializer=fragile)
        )
        origin = Origin()
        async with sq.open_query_client(config(store, serializer=fragile)) as client:
            assert await client.fetch_query(options(origin)) == "v1"
            stats = client.l2_statistics()
            assert stats is not None and (stats.corrupt, stats.hits, stats.misses) == (1, 0, 1)
        assert origin.calls == 1

    async def test_a_good_entry_next_to_corrupt_ones_is_still_a_hit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """In one batch of reads, only the bad entries are misses."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            at = client.clock.wall()
            await store.memory.set('sq:["good"]', entry_bytes("stored", at=at))
            await store.memory.set('sq:["bad"]', b"\xff\xff")
            good, bad = Origin(), Origin()
            results: dict[str, Any] = {}

            async def fetch(name: str, origin: Origin) -> None:
                results[name] = await client.fetch_query(options(origin, (name,), stale_time=60.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch, "good", good)
                nursery.start_soon(fetch, "bad", bad)
            assert results == {"good": "stored", "bad": "v1"}
            assert (good.calls, bad.calls) == (0, 1)
            stats = client.l2_statistics()
            assert stats is not None
            assert (stats.read_batches, stats.hits, stats.misses, stats.corrupt) == (1, 1, 1, 1)


class TestUnencodableValues:
    async def test_a_fetched_value_json_cannot_encode_is_served_from_l1(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A set of ints is returned and cached in L1, never written, counted and logged."""
        origin = Origin({1, 2})
        store = ControlledStorage()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(opts) == {1, 2}
            assert await client.fetch_query(opts) == {1, 2}
            assert origin.calls == 1
            stats = client.l2_statistics()
            assert stats is not None and (stats.serialize_errors, stats.writes) == (1, 0)
        assert store.set_many_calls == []
        assert await store.memory.get(L2_KEY) is None
        (warning,) = l2_warnings(caplog)
        assert re.fullmatch(r'value of query \["user",1\] not written to L2: .*\bset\b.*', warning)

    async def test_a_value_set_that_json_cannot_encode_is_kept_in_l1(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data with an object json cannot encode returns it and keeps it in L1."""
        store = ControlledStorage()
        marker = object()
        async with sq.open_query_client(config(store)) as client:
            assert await client.set_query_data(KEY, marker) is marker
            assert client.get_query_data(KEY) is marker
            stats = client.l2_statistics()
            assert stats is not None and (stats.serialize_errors, stats.writes) == (1, 0)
        assert await store.memory.get(L2_KEY) is None

    async def test_one_unencodable_value_does_not_hold_back_other_writes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Next to a value that cannot be encoded, an encodable one is written as usual."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(Origin(object()), ("bad",)))
            await client.fetch_query(options(Origin("fine"), ("good",)))
            await wait_all_tasks_blocked()
            stats = client.l2_statistics()
            assert stats is not None and (stats.serialize_errors, stats.writes) == (1, 1)
        assert await store.memory.get('sq:["bad"]') is None
        entry = await store.entry(store_key('["good"]'))
        assert entry is not None and entry.value == "fine"
