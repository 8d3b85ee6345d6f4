"""Specification of the client-wide operations: refetch_queries, get/set_queries_data,
ensure_query_data, is_fetching, and query defaults by key prefix."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from tests.stackquery.client_origin import Failure, Origin


def query(key: tuple[Any, ...], origin: Origin, **options: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, retry=0, **options)


class TestRefetchQueries:
    async def test_all_by_default_observed_and_unobserved_fresh_or_not(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """type="all" (TanStack's default): both keys refetch though fresh; the other prefix not."""
        a, b, other = Origin(), Origin(), Origin()
        async with sq.open_query_client() as client:
            observer = client.watch(query(("todos", 1), a, stale_time=60.0))
            unsubscribe = observer.subscribe(lambda _state: None)
            await client.fetch_query(query(("todos", 2), b, stale_time=60.0))
            await client.fetch_query(query(("users", 1), other, stale_time=60.0))
            await wait_all_tasks_blocked()
            assert await client.refetch_queries(("todos",), wait=True) == 2
            assert (a.calls, b.calls, other.calls) == (2, 2, 1)
            assert client.get_query_data(("todos", 1)) == "v2"
            assert client.get_query_data(("todos", 2)) == "v2"
            unsubscribe()

    @pytest.mark.parametrize(("kind", "calls"), [("active", (2, 1)), ("inactive", (1, 2))])
    async def test_type_picks_observed_or_unobserved_keys(
        self, autojump_clock: trio.testing.MockClock, kind: Any, calls: tuple[int, int]
    ) -> None:
        """ "active": only the key with an enabled observer; "inactive": only the other."""
        observed, unobserved = Origin(), Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(query(("k", 1), observed)).subscribe(lambda _s: None)
            await client.fetch_query(query(("k", 2), unobserved))
            await wait_all_tasks_blocked()
            assert await client.refetch_queries(type=kind, wait=True) == 1
            assert (observed.calls, unobserved.calls) == calls
            unsubscribe()

    async def test_keys_without_a_known_query_fn_or_with_disabled_observers_are_skipped(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key only set, and one observed by a disabled observer only: neither refetches."""
        disabled = Origin()
        async with sq.open_query_client() as client:
            await client.set_query_data(("k", "set"), "set")
            watched = client.watch(query(("k", "off"), disabled, enabled=False))
            unsubscribe = watched.subscribe(lambda _s: None)
            await client.set_query_data(("k", "off"), "seeded")
            assert await client.refetch_queries(wait=True) == 0
            assert disabled.calls == 0
            assert client.get_query_data(("k", "set")) == "set"
            unsubscribe()

    async def test_exact_and_predicate_narrow_the_match(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """exact=True takes the key alone; a predicate sees (key, state) of each candidate."""
        origins = {n: Origin() for n in (1, 2, 3)}
        async with sq.open_query_client() as client:
            for n, origin in origins.items():
                await client.fetch_query(query(("n", n), origin))
            assert await client.refetch_queries(("n", 1), exact=True, wait=True) == 1
            odd = await client.refetch_queries(
                ("n",), predicate=lambda key, _state: key[1] % 2 == 1, wait=True
            )
            assert odd == 2
            assert [origins[n].calls for n in (1, 2, 3)] == [3, 1, 2]

    async def test_without_wait_it_returns_before_the_fetches_land(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """wait=False: returns at once with the key fetching; the data lands 1 s later."""
        origin = Origin(delay=1.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(query(("k",), origin))
            start = trio.current_time()
            assert await client.refetch_queries(("k",)) == 1
            assert (trio.current_time() - start, client.is_fetching(("k",))) == (0.0, 1)
            await trio.sleep(1.5)
            assert (client.get_query_data(("k",)), client.is_fetching()) == ("v2", 0)

    async def test_wait_returns_once_settled_and_raises_no_fetch_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing refetch with wait=True: returns after 1 s; the error is the key's state."""
        origin = Origin("ok", Failure("down"), delay=1.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(query(("k",), origin))
            start = trio.current_time()
            assert await client.refetch_queries(wait=True) == 1
            state = client.get_query_state(("k",))
            assert state is not None
            elapsed = trio.current_time() - start
            assert (elapsed, state.status, state.data) == (1.0, sq.QueryStatus.ERROR, "ok")
            assert str(state.error) == "down"

    async def test_a_key_being_fetched_joins_its_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refetch while a fetch is in flight makes no second origin call."""
        origin = Origin(delay=1.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(query(("k",), origin))
            await client.prefetch_query(query(("k",), origin))
            assert await client.refetch_queries(wait=True) == 1
            assert origin.calls == 2

    async def test_a_passivated_key_is_refetched_with_its_last_options(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Its actor ended long ago: the options it was last read with fetch it again."""
        first, last = Origin(), Origin("new")
        async with sq.open_query_client() as client:
            await client.fetch_query(query(("k",), first))
            await client.fetch_query(query(("k",), last))  # stale_time 0: a refetch by `last`
            await trio.sleep(10.0)
            assert await client.refetch_queries(wait=True) == 1
            assert (first.calls, last.calls, client.get_query_data(("k",))) == (1, 2, "new")

    async def test_an_unknown_type_is_refused(self) -> None:
        """type must be one of three: the error names what was given."""
        async with sq.open_query_client() as client:
            with pytest.raises(sq.InvalidOptionError, match=r"^type must be 'active', 'inac"):
                await client.refetch_queries(type="stale")  # type: ignore[arg-type]


class TestQueriesData:
    async def test_get_queries_data_lists_keys_holding_data(self) -> None:
        """Keys under the prefix with data (None included); a pending key is left out."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("u", 1), {"n": 1})
            await client.set_query_data(("u", 2), None)
            await client.set_query_data(("x", 1), "x")
            await client.prefetch_query(query(("u", 3), Origin(delay=5.0)))
            found = client.get_queries_data(("u",))
            assert sorted(found, key=repr) == [(("u", 1), {"n": 1}), (("u", 2), None)]
            assert len(client.get_queries_data()) == 3

    async def test_set_queries_data_updates_each_key_holding_data(self) -> None:
        """The updater gets each old value; keys without data are untouched; pairs returned."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("u", 1), 1)
            await client.set_query_data(("u", 2), 2)
            await client.prefetch_query(query(("u", 3), Origin(delay=5.0)))
            done = await client.set_queries_data(("u",), lambda old: old * 10)
            assert sorted(done) == [(("u", 1), 10), (("u", 2), 20)]
            assert sorted(client.get_queries_data(("u",))) == [(("u", 1), 10), (("u", 2), 20)]

    async def test_set_queries_data_with_a_value(self) -> None:
        """A value (not callable) replaces each matching key's data."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("u", 1), 1)
            assert await client.set_queries_data(("u",), "same") == [(("u", 1), "same")]

    async def test_an_updater_that_raises_stops_there(self) -> None:
        """The first key keeps its new data, the one it raised for and later ones are unchanged."""

        def updater(old: int) -> int:
            if old == 2:
                raise ValueError("no")
            return old + 100

        async with sq.open_query_client() as client:
            for n in (1, 2, 3):
                await client.set_query_data(("u", n), n)
            with pytest.raises(ValueError, match=r"^no$"):
                await client.set_queries_data(("u",), updater)
            found = sorted(client.get_queries_data(("u",)))
            assert found == [(("u", 1), 101), (("u", 2), 2), (("u", 3), 3)]


class TestEnsureQueryData:
    async def test_stale_data_is_returned_without_a_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data 100 s past its stale time: returned as is, no origin call."""
        origin = Origin()
        async with sq.open_query_client() as client:
            options = query(("k",), origin, stale_time=1.0)
            await client.fetch_query(options)
            await trio.sleep(100.0)
            assert await client.ensure_query_data(options) == "v1"
            await wait_all_tasks_blocked()
            assert origin.calls == 1

    async def test_a_cold_key_is_fetched(self, autojump_clock: trio.testing.MockClock) -> None:
        """No data: it waits for the fetch and returns its value."""
        origin = Origin(delay=1.0)
        async with sq.open_query_client() as client:
            assert await client.ensure_query_data(query(("k",), origin)) == "v1"
            assert (origin.calls, trio.current_time()) == (1, 1.0)

    async def test_revalidate_if_stale_refetches_in_the_background(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Stale data is returned at once and a refetch starts; fresh data starts none."""
        origin = Origin()
        async with sq.open_query_client() as client:
            options = query(("k",), origin, stale_time=1.0)
            await client.fetch_query(options)
            assert await client.ensure_query_data(options, revalidate_if_stale=True) == "v1"
            await wait_all_tasks_blocked()
            assert origin.calls == 1
            await trio.sleep(2.0)
            assert await client.ensure_query_data(options, revalidate_if_stale=True) == "v1"
            await wait_all_tasks_blocked()
            assert (origin.calls, client.get_query_data(("k",))) == (2, "v2")

    async def test_options_must_be_query_options(self) -> None:
        """Anything else is a TypeError naming its type."""
        async with sq.open_query_client() as client:
            with pytest.raises(TypeError, match=r"^options must be a QueryOptions, got dict$"):
                await client.ensure_query_data({})  # type: ignore[arg-type]


class TestIsFetching:
    async def test_counts_by_prefix_exact_and_predicate(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two keys fetching under "a", one under "b"; 0 once they landed."""
        async with sq.open_query_client() as client:
            for key in (("a", 1), ("a", 2), ("b", 1)):
                await client.prefetch_query(query(key, Origin(delay=1.0)))
            assert (client.is_fetching(), client.is_fetching(("a",))) == (3, 2)
            assert client.is_fetching(("a", 1), exact=True) == 1
            assert client.is_fetching(predicate=lambda key, _s: key[1] == 1) == 2
            await trio.sleep(1.5)
            assert client.is_fetching() == 0
        assert client.is_fetching() == 0


class TestQueryDefaults:
    def test_the_longest_prefix_wins_per_option(self) -> None:
        """All matching prefixes merge, the more specific one winning, whatever the order."""
        client = sq.QueryClient()
        client.set_query_defaults(("todos", "done"), stale_time=5.0)
        client.set_query_defaults(("todos",), stale_time=60.0, retry=1)
        client.set_query_defaults((), gc_time=10.0)
        assert client.get_query_defaults(("todos", "done", 3)) == {
            "gc_time": 10.0,
            "stale_time": 5.0,
            "retry": 1,
        }
        assert client.get_query_defaults(("todos", 1)) == {
            "gc_time": 10.0,
            "stale_time": 60.0,
            "retry": 1,
        }
        assert client.get_query_defaults(("todo",)) == {"gc_time": 10.0}

    def test_registering_a_prefix_again_replaces_it_and_none_forgets_it(self) -> None:
        """The second call's options are the prefix's options; an empty call removes them."""
        client = sq.QueryClient()
        client.set_query_defaults(("t",), stale_time=1.0, retry=2)
        client.set_query_defaults(("t",), retry=5)
        assert client.get_query_defaults(("t", 1)) == {"retry": 5}
        client.set_query_defaults(("t",))
        assert client.get_query_defaults(("t", 1)) == {}

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"enabled": False}, sq.InvalidOptionError, r"^enabled cannot be a default"),
            ({"query_fn": Origin()}, sq.InvalidOptionError, r"^query_fn cannot be a default"),
            ({"stale": 1.0}, sq.InvalidOptionError, r"^'stale' is not a query option; defaults"),
            ({"stale_time": -1.0}, sq.InvalidOptionError, r"^stale_time must be >= 0 seconds"),
            ({"select": 3}, TypeError, r"^select must be callable, got int: 3$"),
        ],
    )
    def test_bad_defaults_are_refused_when_set(
        self, options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """Each refusal names the option, as QueryOptions would; nothing is registered."""
        client = sq.QueryClient()
        with pytest.raises(error, match=message):
            client.set_query_defaults(("t",), **options)
        assert client.get_query_defaults(("t",)) == {}

    async def test_fetch_query_takes_the_default_stale_time_and_keeps_its_own(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """stale_time=60 from the prefix: no refetch 30 s on; a query's own 10 s wins over it."""
        defaulted, own = Origin(), Origin()
        async with sq.open_query_client() as client:
            client.set_query_defaults(("t",), stale_time=60.0)
            await client.fetch_query(query(("t", 1), defaulted))
            await client.fetch_query(query(("t", 2), own, stale_time=10.0))
            await trio.sleep(30.0)
            await client.fetch_query(query(("t", 1), defaulted))
            await client.fetch_query(query(("t", 2), own, stale_time=10.0))
            await wait_all_tasks_blocked()
            assert (defaulted.calls, own.calls) == (1, 2)

    async def test_a_fresh_hit_by_a_default_stale_time_never_yields(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Once resolved, the options are memoized: the hit finishes in one step."""
        options = query(("t", 1), Origin())
        async with sq.open_query_client() as client:
            client.set_query_defaults(("t",), stale_time=60.0)
            await client.fetch_query(options)
            await client.fetch_query(options)
            coro = client.fetch_query(options)
            with pytest.raises(StopIteration) as done:
                coro.send(None)
            assert done.value.value == "v1"

    async def test_defaults_reach_observers_and_prefetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """refetch_interval=10 from the prefix makes an observer refetch every 10 s."""
        origin = Origin()
        async with sq.open_query_client() as client:
            client.set_query_defaults(("t",), refetch_interval=10.0, stale_time=5.0)
            unsubscribe = client.watch(query(("t",), origin)).subscribe(lambda _s: None)
            await trio.sleep(22.0)
            assert origin.started_at == [0.0, 10.0, 20.0]
            unsubscribe()
            await client.prefetch_query(query(("t",), origin))  # 2 s old: fresh
            await wait_all_tasks_blocked()
            assert origin.calls == 3

    async def test_ensure_query_data_uses_the_defaults(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry=2 from the prefix: a cold ensure_query_data tries three times."""
        origin = Origin(Failure("1"), Failure("2"), "ok")
        async with sq.open_query_client() as client:
            client.set_query_defaults(("t",), retry=2, retry_delay=1.0)
            options = sq.QueryOptions(query_key=("t",), query_fn=origin)
            assert await client.ensure_query_data(options) == "ok"
            assert origin.calls == 3
