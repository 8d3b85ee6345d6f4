"""Specification of ``QueryClient.fetch_queries``: many keys at once, in order, one L2 read."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
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
