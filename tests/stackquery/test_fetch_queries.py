"""Specification of ``QueryClient.fetch_queries``: many keys at once, in order, one L2 read."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery._fetch_many import fetch_all
from tests.stackquery.l2_store import ControlledStorage, store_key


class Origins:
    """One origin per key: counts calls per key; each call takes ``delay`` seconds."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.calls: dict[Any, int] = {}
        self.failing: dict[Any, Exception] = {}

    def options(self, name: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
        async def origin() -> str:
            self.calls[name] = self.calls.get(name, 0) + 1
            await trio.sleep(self.delay)
            if name in self.failing:
                raise self.failing[name]
            return f"{name}#{self.calls[name]}"

        return sq.QueryOptions(query_key=("item", name), query_fn=origin, **kwargs)


def no_retry(**kwargs: Any) -> sq.QueryClientConfig:
    return sq.QueryClientConfig(retry=0, **kwargs)


class TestFetchQueries:
    async def test_results_in_order_and_duplicates_fetched_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Every key is fetched concurrently, once, and the list comes back in the order asked."""
        origins = Origins()
        async with sq.open_query_client(no_retry()) as client:
            got = await client.fetch_queries(
                [origins.options("b"), origins.options("a"), origins.options("b")]
            )
            assert got == ["b#1", "a#1", "b#1"]
            assert origins.calls == {"a": 1, "b": 1}
            assert trio.current_time() == 1.0
            assert await client.fetch_queries([]) == []

    async def test_fresh_keys_only_do_not_checkpoint(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A list of fresh keys is served like fresh hits of fetch_query: no checkpoint."""
        origins = Origins()
        opts = [origins.options("a", stale_time=60.0), origins.options("b", stale_time=60.0)]
        async with sq.open_query_client(no_retry()) as client:
            await client.fetch_queries(opts)
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_queries(opts[::-1]) == ["b#1", "a#1"]

    async def test_a_mix_of_fresh_stale_and_cold_keys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Fresh and stale keys are served at once (stale ones refetched); cold ones waited for."""
        origins = Origins()
        async with sq.open_query_client(no_retry()) as client:
            await client.fetch_queries([origins.options("fresh", stale_time=60.0)])
            await client.fetch_queries([origins.options("stale", stale_time=0.0)])
            got = await client.fetch_queries(
                [
                    origins.options("fresh", stale_time=60.0),
                    origins.options("stale", stale_time=0.0),
                    origins.options("cold"),
                ]
            )
            assert got == ["fresh#1", "stale#1", "cold#1"]
            assert trio.current_time() == 3.0
            await trio.sleep(0.5)
            assert client.get_query_data(("item", "stale")) == "stale#2"

    async def test_the_first_error_in_list_order_is_raised_after_every_key_settled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """As fetchQuery per key: the other keys land in the cache, then the first error raises."""
        origins = Origins()
        origins.failing = {"c": KeyError("c"), "b": ValueError("b is broken")}
        async with sq.open_query_client(no_retry()) as client:
            with pytest.raises(ValueError, match="b is broken"):
                await client.fetch_queries(
                    [origins.options("a"), origins.options("b"), origins.options("c")]
                )
            assert client.get_query_data(("item", "a")) == "a#1"
            state = client.get_query_state(("item", "c"))
            assert state is not None and isinstance(state.error, KeyError)

    async def test_cold_keys_are_read_from_l2_in_one_get_many(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A restarted client reads its cold keys in one get_many and fetches only the misses."""
        store = ControlledStorage()
        origins = Origins()
        opts = [origins.options(name, stale_time=60.0) for name in ("a", "b", "c", "d")]
        async with sq.open_query_client(no_retry(storage=store)) as client:
            await client.fetch_queries(opts[:2])
        store.get_many_calls.clear()
        async with sq.open_query_client(no_retry(storage=store)) as client:
            assert await client.fetch_queries(opts) == ["a#1", "b#1", "c#1", "d#1"]
            assert [sorted(keys) for keys in store.get_many_calls] == [
                sorted(store_key(o) for o in opts)
            ]
            assert origins.calls == {"a": 1, "b": 1, "c": 1, "d": 1}

    async def test_a_cancelled_caller_stops_waiting_and_the_fetches_land(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled while waiting: the keys' fetches go on and land in the cache."""
        origins = Origins()
        async with sq.open_query_client(no_retry()) as client:
            with trio.move_on_after(0.5):
                await client.fetch_queries([origins.options("a"), origins.options("b")])
            await trio.sleep(1.0)
            assert client.get_query_data(("item", "a")) == "a#1"
            assert client.get_query_data(("item", "b")) == "b#1"

    async def test_bad_input_is_refused(self, autojump_clock: trio.testing.MockClock) -> None:
        """A single QueryOptions, a non-iterable or an item of another type: TypeError."""
        opts = Origins().options("a")
        async with sq.open_query_client(no_retry()) as client:
            with pytest.raises(TypeError, match="must be a list of QueryOptions, got QueryOptions"):
                await client.fetch_queries(opts)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="must be a list of QueryOptions, got int"):
                await client.fetch_queries(3)  # type: ignore[arg-type]
            bad_item = r"options_list\[1\] must be a QueryOptions, got str"
            with pytest.raises(TypeError, match=bad_item):
                await client.fetch_queries([opts, "b"])  # type: ignore[list-item]

    async def test_a_closed_client_refuses_keys_it_must_fetch(self) -> None:
        """Outside its ``async with``: ClientClosedError, as fetch_query raises it."""
        client = sq.QueryClient()
        async with client:
            pass
        with pytest.raises(sq.ClientClosedError):
            await client.fetch_queries([Origins().options("a")])


async def stored(
    store: ControlledStorage, client: sq.QueryClient, opts: Any, value: Any, *, age: float = 0.0
) -> None:
    """Put ``value`` in ``store`` as ``opts``' entry, fetched ``age`` seconds ago."""
    at = client.clock.wall() - age
    entry = sq.pack_entry(value, data_updated_at=at, serializer=sq.serializers.json)
    await store.memory.set(store_key(opts), entry)


def gated_pair() -> tuple[ControlledStorage, Origins, sq.QueryOptions[Any], sq.QueryOptions[Any]]:
    """A store whose reads wait at a gate, and keys "a" and "b" (fresh for 60 s)."""
    store = ControlledStorage()
    store.read_gate = trio.Event()
    origins = Origins()
    return (
        store,
        origins,
        origins.options("a", stale_time=60.0),
        origins.options("b", stale_time=60.0),
    )


Gated = tuple[
    ControlledStorage, Origins, sq.QueryOptions[Any], sq.QueryOptions[Any], sq.QueryClient
]


@contextlib.asynccontextmanager
async def gated_client() -> AsyncIterator[Gated]:
    """A client on :func:`gated_pair`'s store, which holds "stored a" and "stored b"."""
    store, origins, a, b = gated_pair()
    async with sq.open_query_client(no_retry(storage=store)) as client:
        await stored(store, client, a, "stored a")
        await stored(store, client, b, "stored b")
        yield store, origins, a, b, client


class TestColdBatch:
    """The cold keys of one call are read from L2 together and landed together."""

    async def test_the_keys_found_new_are_handed_to_the_claim(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A list of keys each listed once, none in L1, hands the claim their hashes (not
        looked for again); a list with a key twice, or with a key in L1, hands none."""
        claims: list[tuple[list[str], list[str] | None]] = []

        class Recording:
            def claim_many(
                self, options_list: list[sq.QueryOptions[Any]], new_keys: list[str] | None = None
            ) -> tuple[None, list[int]]:
                claims.append(([options.key_hash for options in options_list], new_keys))
                return None, []

        async def fetch_one(options: sq.QueryOptions[Any]) -> Any:
            return options.query_key[1]

        origins = Origins()
        a, b, c = (origins.options(name) for name in "abc")
        async with sq.open_query_client(no_retry()) as client:
            await client.fetch_query(c)
            snapshots = client.snapshots
            assert c.key_hash in snapshots and a.key_hash not in snapshots
            assert await fetch_all(snapshots, [a, b], fetch_one, Recording()) == ["a", "b"]
            assert await fetch_all(snapshots, [a, b, a], fetch_one, Recording()) == ["a", "b", "a"]
            assert await fetch_all(snapshots, [a, c], fetch_one, Recording()) == ["a", "c"]
        ab = [a.key_hash, b.key_hash]
        assert claims == [(ab, ab), (ab, None), ([a.key_hash, c.key_hash], None)]

    async def test_keys_fresh_in_l2_land_with_no_actor(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Keys fresh in L2: one get_many, no actor, each key idle after one fetch."""
        store = ControlledStorage()
        origins = Origins()
        opts = [origins.options(name, stale_time=60.0) for name in ("a", "b", "c")]
        async with sq.open_query_client(no_retry(storage=store)) as client:
            for one in opts:
                await stored(store, client, one, f"stored {one.query_key[1]}")
            assert await client.fetch_queries(opts) == ["stored a", "stored b", "stored c"]
            assert len(store.get_many_calls) == 1
            assert client.statistics().activations == 0
            assert origins.calls == {}
            records = {record.key: record for record in client.snapshot()}
            for one in opts:
                record = records[one.query_key]
                assert (record.fetch_status, record.fetch_count) == (sq.FetchStatus.IDLE, 1)
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_queries(opts[:2]) == ["stored a", "stored b"]

    @pytest.mark.parametrize("listening", [False, True])
    async def test_a_key_with_initial_data_is_left_out_of_the_read(
        self, autojump_clock: trio.testing.MockClock, listening: bool
    ) -> None:
        """A key with initial_data among cold keys is not claimed (it starts from its
        initial data, as fetch_query starts it); the others are read in one get_many, with
        or without anybody listening."""
        store = ControlledStorage()
        origins = Origins()
        a, c = (origins.options(name, stale_time=60.0) for name in "ac")
        b = origins.options("b", stale_time=60.0, initial_data="seed b")
        async with sq.open_query_client(no_retry(storage=store)) as client:
            for one in (a, b, c):
                await stored(store, client, one, f"stored {one.query_key[1]}")
            if listening:
                client.watch(origins.options("other", enabled=False)).subscribe(lambda s: None)
            assert await client.fetch_queries([a, b, c]) == ["stored a", "seed b", "stored c"]
            assert len(store.get_many_calls) == 1
            assert sorted(store.get_many_calls[0]) == sorted(store_key(o) for o in (a, c))
            assert origins.calls == {}

    async def test_stale_and_missing_keys_are_handed_to_their_actors(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Stale in L2: served, refetched once; absent: fetched once; fresh: served."""
        store = ControlledStorage()
        origins = Origins()
        fresh, stale, absent = (origins.options(n, stale_time=60.0) for n in ("f", "s", "x"))
        async with sq.open_query_client(no_retry(storage=store)) as client:
            await stored(store, client, fresh, "stored f")
            await stored(store, client, stale, "stored s", age=100.0)
            got = await client.fetch_queries([fresh, stale, absent])
            assert got == ["stored f", "stored s", "x#1"]
            assert trio.current_time() == 1.0
            await trio.sleep(0.5)
            assert origins.calls == {"s": 1, "x": 1}
            assert client.get_query_data(("item", "s")) == "s#1"

    async def test_a_key_read_by_another_caller_is_joined_not_read_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key whose cold read is out joins it; only the other keys go in the next get_many."""
        got: list[Any] = []
        async with gated_client() as (store, origins, a, b, client):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, a)
                await trio.testing.wait_all_tasks_blocked()

                async def fetch_both() -> None:
                    got.extend(await client.fetch_queries([a, b]))

                nursery.start_soon(fetch_both)
                await trio.testing.wait_all_tasks_blocked()
                store.read_gate.set()
            assert got == ["stored a", "stored b"]
            assert store.get_many_calls == [[store_key(a)], [store_key(b)]]
            assert origins.calls == {}

    async def test_a_cancelled_caller_leaves_the_reads_to_land(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled while the read is out: the keys still land, for a caller that joined them."""
        joined: list[Any] = []
        async with gated_client() as (store, origins, a, b, client):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def join() -> None:
                        joined.append(await client.fetch_query(b))

                    nursery.start_soon(client.fetch_queries, [a, b])
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(join)
                await trio.testing.wait_all_tasks_blocked()
                store.read_gate.set()
            assert joined == ["stored b"]
            assert client.get_query_data(("item", "a")) == "stored a"
            assert len(store.get_many_calls) == 1
            assert origins.calls == {}

    async def test_cancel_queries_during_the_read_settles_that_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries of one key while the batch is read: that key's error, the others land."""
        errors: list[BaseException] = []
        async with gated_client() as (store, origins, a, b, client):

            async def fetch_both() -> None:
                try:
                    await client.fetch_queries([a, b])
                except sq.QueryCancelledError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_both)
                await trio.testing.wait_all_tasks_blocked()
                assert await client.cancel_queries(("item", "a")) == 1
                store.read_gate.set()
            assert [str(e) for e in errors] == ["query fetch cancelled by cancel_queries"]
            assert client.get_query_state(("item", "a")) == sq.QueryState()
            assert client.get_query_data(("item", "b")) == "stored b"
            assert origins.calls == {}

    async def test_query_defaults_apply_to_the_batch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key read in the batch is judged with its prefix's defaults, as by fetch_query."""
        store = ControlledStorage()
        origins = Origins()
        one = origins.options("a")
        async with sq.open_query_client(no_retry(storage=store)) as client:
            client.set_query_defaults(("item",), stale_time=60.0)
            await stored(store, client, one, "stored a")
            two = origins.options("b")
            await stored(store, client, two, "stored b", age=30.0)
            assert await client.fetch_queries([one, two]) == ["stored a", "stored b"]
            await trio.sleep(5.0)
            assert origins.calls == {}  # 30 s old is fresh under the default's 60 s

    async def test_no_task_per_key(self, autojump_clock: trio.testing.MockClock) -> None:
        """While the read is out, 30 cold keys run exactly as many tasks as 3 do."""

        def tasks() -> int:
            def count(task: trio.lowlevel.Task) -> int:
                children = (c for n in task.child_nurseries for c in n.child_tasks)
                return 1 + sum(count(child) for child in children)

            return count(trio.lowlevel.current_root_task())

        origins = Origins()
        counted: list[int] = []
        for keys in (3, 30):
            store = ControlledStorage()
            store.read_gate = trio.Event()
            opts = [origins.options(i, stale_time=60.0) for i in range(keys)]
            async with sq.open_query_client(no_retry(storage=store)) as client:
                for one in opts:
                    await stored(store, client, one, one.query_key[1])
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.fetch_queries, opts)
                    await trio.testing.wait_all_tasks_blocked()
                    counted.append(tasks())
                    store.read_gate.set()
        assert counted[0] == counted[1]


async def batch_read_with(
    store: ControlledStorage,
    client: sq.QueryClient,
    keys: list[sq.QueryOptions[Any]],
    meanwhile: Callable[[], Awaitable[object]],
) -> list[Any]:
    """``fetch_queries(keys)``, with ``meanwhile()`` run while its read waits at the gate."""
    got: list[Any] = []

    async def fetch() -> None:
        got.extend(await client.fetch_queries(keys))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked()
        await meanwhile()
        store.read_gate.set()
    return got


class TestColdBatchLanding:
    """What a batch's read finds is judged per key, as a lone cold read judges it."""

    async def test_each_fresh_key_is_published_once_idle(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fresh key lands in one publish: one update event, fresh and idle, fetched once."""
        store = ControlledStorage()
        origins = Origins()
        opts = [origins.options(name, stale_time=60.0) for name in ("a", "b")]
        async with sq.open_query_client(no_retry(storage=store)) as client:
            for one in opts:
                await stored(store, client, one, f"stored {one.query_key[1]}")
            async with client.events() as events:
                assert await client.fetch_queries(opts) == ["stored a", "stored b"]
                seen: list[tuple[Any, Any, Any]] = []
                while len(seen) < 6:
                    event = await events.__anext__()
                    assert event.state is not None
                    seen.append((event.type, event.key, event.state.fetch_status))
            added, started, updated = (
                sq.CacheEventType.ADDED,
                sq.CacheEventType.FETCH_STARTED,
                sq.CacheEventType.UPDATED,
            )
            fetching, idle = sq.FetchStatus.FETCHING, sq.FetchStatus.IDLE
            assert seen == [
                (added, ("item", "a"), idle),
                (started, ("item", "a"), fetching),
                (added, ("item", "b"), idle),
                (started, ("item", "b"), fetching),
                (updated, ("item", "a"), idle),
                (updated, ("item", "b"), idle),
            ]
            for one in opts:
                state = client.get_query_state(one.query_key)
                assert state is not None
                assert (state.status, state.is_stale) == (sq.QueryStatus.SUCCESS, False)

    async def test_a_key_invalidated_during_the_read_is_served_stale_and_refetched_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated while the batch is read: its entry is served, then refetched once."""
        async with gated_client() as (store, origins, a, b, client):
            invalidate = partial(client.invalidate_queries, ("item", "a"), refetch=False)
            assert await batch_read_with(store, client, [a, b], invalidate) == [
                "stored a",
                "stored b",
            ]
            await trio.sleep(1.5)
            assert origins.calls == {"a": 1}
            assert client.get_query_data(("item", "a")) == "a#1"
            assert client.get_query_data(("item", "b")) == "stored b"

    async def test_an_observer_that_came_during_the_read_hears_the_landing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key observed while the batch is read: its listener gets the landed data."""
        heard: list[Any] = []
        unsubscribe: list[Callable[[], None]] = []

        async def observe() -> None:
            unsubscribe.append(client.watch(b).subscribe(lambda state: heard.append(state.data)))

        async with gated_client() as (store, origins, a, b, client):
            await batch_read_with(store, client, [a, b], observe)
            await trio.testing.wait_all_tasks_blocked()
            assert heard == [None, "stored b"]
            assert origins.calls == {}
            unsubscribe[0]()

    async def test_what_was_read_during_the_read_is_not_changed_by_the_landing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """States, and the table's snapshots themselves (``client.snapshots``: immutable),
        read while the batch is read stay what they were: each key lands as a new snapshot."""
        during: list[Any] = []
        held: list[Any] = []

        async def look() -> None:
            during.extend(client.get_query_state(o.query_key) for o in (a, b))
            held.extend(client.snapshots[o.key_hash] for o in (a, b))

        async with gated_client() as (store, origins, a, b, client):
            got = await batch_read_with(store, client, [a, b], look)
            assert got == ["stored a", "stored b"]
            assert [(s.status, s.fetch_status, s.data) for s in during] == [
                (sq.QueryStatus.PENDING, sq.FetchStatus.FETCHING, None)
            ] * 2
            assert [(s.status, s.data) for s in held] == [(sq.QueryStatus.PENDING, None)] * 2
            after = [client.get_query_state(o.query_key) for o in (a, b)]
            assert [(s.status, s.fetch_status, s.data) for s in after] == [
                (sq.QueryStatus.SUCCESS, sq.FetchStatus.IDLE, "stored a"),
                (sq.QueryStatus.SUCCESS, sq.FetchStatus.IDLE, "stored b"),
            ]
            landed = [client.snapshots[o.key_hash] for o in (a, b)]
            assert all(old is not new for old, new in zip(held, landed, strict=True))
            assert origins.calls == {}

    async def test_an_observer_subscribed_while_the_batch_lands_hears_its_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Key a's stale_time function, run as the batch lands, subscribes an observer of key
        b, which lands later in the same batch: b has an actor by then, lands through it,
        and the observer hears its data."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origins = Origins()
        heard: list[Any] = []
        subscribed: list[Callable[[], None]] = []
        b = origins.options("b", stale_time=60.0)

        def stale_a(data: Any) -> float:
            if not subscribed:
                subscribed.append(client.watch(b).subscribe(lambda s: heard.append(s.data)))
            return 60.0

        a = origins.options("a", stale_time=stale_a)

        async def nothing() -> None:
            pass

        async with sq.open_query_client(no_retry(storage=store)) as client:
            await stored(store, client, a, "stored a")
            await stored(store, client, b, "stored b")
            assert await batch_read_with(store, client, [a, b], nothing) == [
                "stored a",
                "stored b",
            ]
            await trio.testing.wait_all_tasks_blocked()
            assert heard == [None, "stored b"]
            assert origins.calls == {}
            subscribed[0]()

    async def test_an_empty_claim_claims_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """claim_many of no options starts no read: no batch, no places."""
        async with sq.open_query_client(no_retry(storage=ControlledStorage())) as client:
            cold = client._cold_batch()
            assert cold is not None
            batch, places = cold.claim_many([])
            assert (batch, list(places)) == (None, [])
            assert len(client.snapshots) == 0

    async def test_entries_that_cannot_land_fresh_are_judged_one_by_one(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Corrupt: counted, fetched; stamped in the future: counted, served, refetched;
        past max_age: fetched; fresh: served."""
        store = ControlledStorage()
        origins = Origins()
        corrupt = origins.options("c", stale_time=60.0)
        future = origins.options("f", stale_time=60.0)
        aged = origins.options("m", stale_time=60.0, max_age=10.0)
        fresh = origins.options("ok", stale_time=60.0)
        async with sq.open_query_client(no_retry(storage=store)) as client:
            await store.memory.set(store_key(corrupt), b'{"sq": 1, "not": "an entry"}')
            await stored(store, client, future, "stored f", age=-3600.0)
            await stored(store, client, aged, "stored m", age=20.0)
            await stored(store, client, fresh, "stored ok")
            got = await client.fetch_queries([corrupt, future, aged, fresh])
            assert got == ["c#1", "stored f", "m#1", "stored ok"]
            stats = client.l2_statistics()
            assert (stats.corrupt, stats.future_entries, stats.read_batches) == (1, 1, 1)
            await trio.sleep(1.5)
            assert origins.calls == {"c": 1, "f": 1, "m": 1}
            assert client.get_query_data(("item", "f")) == "f#1"

    async def test_each_key_keeps_its_own_stale_and_gc_times(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Keys of one batch read alike or not: each lands fresh for its own stale time
        (a function of its data too) and leaves L1 after its own gc time."""
        store = ControlledStorage()
        origins = Origins()
        opts = [
            origins.options("a", stale_time=60.0, gc_time=20.0),
            origins.options("b", stale_time=60.0, gc_time=20.0),
            origins.options("c", stale_time=5.0),
            origins.options("d", stale_time=lambda data: 5.0 if data == "stored d" else 60.0),
            origins.options("e", stale_time=lambda data: 5.0 if data == "stored d" else 60.0),
        ]
        async with sq.open_query_client(no_retry(storage=store, gc_time=100.0)) as client:
            for one in opts:
                await stored(store, client, one, f"stored {one.query_key[1]}")
            got = await client.fetch_queries(opts)
            assert got == ["stored a", "stored b", "stored c", "stored d", "stored e"]
            assert client.l2_statistics().read_batches == 1
            await trio.sleep(10.0)

            def stale(name: str) -> bool:
                state = client.get_query_state(("item", name))
                assert state is not None
                return state.is_stale

            assert [stale(name) for name in "abcde"] == [False, False, True, True, False]
            await trio.sleep(30.0)
            assert [client.get_query_state(("item", name)) is None for name in "abcde"] == [
                True,
                True,
                False,
                False,
                False,
            ]
            assert origins.calls == {}


class TestBatchRead:
    """A batch's keys share one read; a key gets a read of its own only when it needs one."""

    async def test_keys_claimed_and_landed_together_share_one_gc_deadline(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The keys of a batch, made fetching then landed at one moment, keep one float for
        their gc deadline (not one each), whatever their data's age."""
        async with gated_client() as (store, origins, a, b, client):
            c = origins.options("c", stale_time=60.0)
            await stored(store, client, c, "stored c", age=10.0)
            fetching: list[object] = []

            async def fetch_all() -> None:
                assert await client.fetch_queries([a, b, c]) == ["stored a", "stored b", "stored c"]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_all)
                await trio.testing.wait_all_tasks_blocked()
                fetching = [client.snapshots[o.key_hash].collect_kept for o in (a, b, c)]
                store.read_gate.set()
            assert [id(kept) for kept in fetching] == [id(fetching[0])] * 3
            landed = [client.snapshots[o.key_hash] for o in (a, b, c)]
            assert [id(snap.collect_kept) for snap in landed] == [id(landed[0].collect_kept)] * 3
            assert landed[0].collect_at == trio.current_time() + landed[0].gc_time
            assert origins.calls == {}

    async def test_a_caller_that_joins_a_key_mid_read_gets_its_landing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """fetch_query of a key the batch reads joins that read: one get_many, no origin call."""
        got: list[Any] = []
        joined: list[Any] = []
        async with gated_client() as (store, origins, a, b, client):

            async def fetch_both() -> None:
                got.extend(await client.fetch_queries([a, b]))

            async def join() -> None:
                joined.append(await client.fetch_query(b))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_both)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(join)
                await trio.testing.wait_all_tasks_blocked()
                store.read_gate.set()
            assert (got, joined) == (["stored a", "stored b"], ["stored b"])
            assert store.get_many_calls == [[store_key(a), store_key(b)]]
            assert origins.calls == {}
            stats = client.l2_statistics()
            assert (stats.reads, stats.hits, stats.misses, stats.read_batches) == (2, 2, 0, 1)

    async def test_a_key_whose_delete_has_not_landed_reads_as_deleted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key removed while its L2 delete waits: the batch reads it as absent, not as the
        store's older entry, and fetches it; the other key is read from the store."""
        async with gated_client() as (store, origins, a, b, client):
            store.read_gate.set()
            store.write_gate = trio.Event()
            await client.set_query_data(a.query_key, "set a")
            await client.remove_queries(a.query_key)
            assert await client.fetch_queries([a, b]) == ["a#1", "stored b"]
            assert origins.calls == {"a": 1}
            stats = client.l2_statistics()
            assert (stats.reads, stats.hits, stats.misses) == (2, 1, 1)
            store.write_gate.set()

    async def test_a_key_whose_write_has_not_landed_reads_as_that_write(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key dropped from L1 while its L2 write waits: the batch reads the write's value."""
        store, origins, a, b = gated_pair()
        store.read_gate = None
        async with sq.open_query_client(no_retry(storage=store, gc_time=5.0)) as client:
            await stored(store, client, a, "stored a")
            await stored(store, client, b, "stored b")
            store.write_gate = trio.Event()
            await client.set_query_data(a.query_key, "set a")
            await trio.sleep(10.0)
            assert client.get_query_state(a.query_key) is None
            assert await client.fetch_queries([a, b]) == ["set a", "stored b"]
            assert origins.calls == {}
            store.write_gate.set()

    async def test_the_client_closing_mid_read_fails_the_batch_caller(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The client closes while the batch is read: its caller gets ClientClosedError."""
        errors: list[BaseException] = []

        async def fetch_both(client: sq.QueryClient, keys: list[Any]) -> None:
            try:
                await client.fetch_queries(keys)
            except sq.ClientClosedError as exc:
                errors.append(exc)

        async with trio.open_nursery() as outer, gated_client() as (_, origins, a, b, client):
            outer.start_soon(fetch_both, client, [a, b])
            await trio.testing.wait_all_tasks_blocked()
        assert [str(e) for e in errors] == ["the query client closed before the fetch finished"]
        assert origins.calls == {}

    async def test_every_key_reset_mid_read_settles_the_caller_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """reset_queries of every key of the batch: its caller gets QueryCancelledError before
        the store answers; what the store answers later lands nowhere."""
        got: list[Any] = []
        async with gated_client() as (store, origins, a, b, client):

            async def fetch_both() -> None:
                try:
                    await client.fetch_queries([a, b])
                except sq.QueryCancelledError as exc:
                    got.append(str(exc))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch_both)
                await trio.testing.wait_all_tasks_blocked()
                assert await client.reset_queries(("item",)) == 2
                await trio.testing.wait_all_tasks_blocked()
                assert got == ["query fetch cancelled by reset_queries"]
                store.read_gate.set()
            assert client.get_query_state(("item", "a")) is None
            assert client.get_query_state(("item", "b")) is None
            assert origins.calls == {}
