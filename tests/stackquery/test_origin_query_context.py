"""Specification of ``QueryContext`` and ``NOT_MODIFIED`` (conditional revalidation)."""

from __future__ import annotations

import types
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery import QueryStatus
from tests.stackquery.client_origin import Failure

KEY = ("user", 42)


class Revalidating:
    """An origin speaking ETags: a 304 when the caller's copy is current."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.contexts: list[sq.QueryContext[Any]] = []

    async def __call__(self, ctx: sq.QueryContext[Any]) -> Any:
        self.contexts.append(ctx)
        answer = self.answers[min(len(self.contexts), len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise type(answer)(*answer.args)
        return answer


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    kwargs.setdefault("retry", 0)
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


class TestContext:
    async def test_first_fetch_context(self, autojump_clock: trio.testing.MockClock) -> None:
        """A cold key: the key, the meta, no previous data, attempt 1."""
        origin = Revalidating({"name": "Ada"})
        async with sq.open_query_client() as client:
            opts = options(origin, meta={"url": "/users/42"})
            assert await client.fetch_query(opts) == {"name": "Ada"}
        (ctx,) = origin.contexts
        assert (ctx.key, dict(ctx.meta), ctx.previous_data, ctx.data_updated_at) == (
            KEY,
            {"url": "/users/42"},
            None,
            None,
        )
        assert (ctx.attempt, ctx.has_previous_data) == (1, False)

    async def test_refetch_sees_previous_data_and_its_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refetch's context holds the data the key holds and the wall time it was fetched."""
        origin = Revalidating("v1", "v2")
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            fetched_at = client.get_query_state(KEY).data_updated_at  # type: ignore[union-attr]
            await trio.sleep(5.0)
            await client.invalidate_queries(KEY)
            assert await client.fetch_query(options(origin)) == "v1"  # stale, refetch started
            await trio.testing.wait_all_tasks_blocked()
        second = origin.contexts[1]
        assert (second.previous_data, second.data_updated_at, second.has_previous_data) == (
            "v1",
            fetched_at,
            True,
        )

    async def test_attempt_counts_retries(self, autojump_clock: trio.testing.MockClock) -> None:
        """Each retry gets a new context with the next attempt number."""
        origin = Revalidating(Failure("a"), Failure("b"), "ok")
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(origin, retry=2, retry_delay=1.0)) == "ok"
        assert [ctx.attempt for ctx in origin.contexts] == [1, 2, 3]

    async def test_sync_query_fn_gets_the_context_in_its_thread(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A plain def with one parameter runs in a worker thread and gets the context too."""
        seen: list[sq.QueryContext[Any]] = []

        def load(ctx: sq.QueryContext[Any]) -> str:
            seen.append(ctx)
            return f"loaded {ctx.meta['id']}"

        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(load, meta={"id": 7})) == "loaded 7"
        assert [ctx.key for ctx in seen] == [KEY]

    async def test_no_parameter_query_fn_is_called_with_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A query_fn without parameters (or only optional ones) is called as before."""
        calls: list[Any] = []

        async def load(page: int = 1) -> int:
            calls.append(page)
            return page

        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(load)) == 1
        assert calls == [1]

    def test_context_is_frozen(self) -> None:
        """QueryContext is a frozen attrs class."""
        ctx = sq.QueryContext(KEY, {}, None, None, 1)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            ctx.attempt = 2  # type: ignore[misc]


class TestNotModified:
    async def test_keeps_the_data_fresh_as_of_now(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """NOT_MODIFIED: the data stays, counts as fetched now, and is fresh for stale_time."""
        origin = Revalidating({"v": 1}, sq.NOT_MODIFIED)
        settled: list[Any] = []
        async with sq.open_query_client() as client:
            opts = options(origin, stale_time=10.0, on_success=settled.append)
            first = await client.fetch_query(opts)
            await trio.sleep(15.0)
            await client.invalidate_queries(KEY)
            await client.fetch_query(opts)
            await trio.testing.wait_all_tasks_blocked()
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.data, state.is_stale) == (QueryStatus.SUCCESS, first, False)
            assert state.data_updated_at == client.clock.wall(15.0)
            assert client.get_query_data(KEY) is first
            await trio.sleep(9.0)
            assert await client.fetch_query(opts) is first  # a fresh hit: no origin call
        assert len(origin.contexts) == 2
        assert settled == [first, first]

    async def test_without_data_is_an_error_of_that_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """NOT_MODIFIED on a cold key fails that fetch with a clear error; the next one works."""
        origin = Revalidating(sq.NOT_MODIFIED, "v2")
        async with sq.open_query_client() as client:
            with pytest.raises(
                sq.NotModifiedWithoutDataError,
                match=r"^query \('user', 42\): query_fn returned NOT_MODIFIED but the key holds "
                r"no data to keep",
            ):
                await client.fetch_query(options(origin))
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.has_data) == (QueryStatus.ERROR, False)
            assert await client.fetch_query(options(origin)) == "v2"

    async def test_counts_as_a_success_for_the_breaker(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A 304 is a healthy origin: a half-open probe answered NOT_MODIFIED closes the breaker."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=5.0)
        origin = Revalidating("v1", Failure("down"), sq.NOT_MODIFIED)
        async with sq.open_query_client() as client:
            opts = options(origin, circuit=breaker)
            await client.fetch_query(opts)
            await client.invalidate_queries(KEY)
            await client.fetch_query(opts)
            await trio.testing.wait_all_tasks_blocked()
            assert breaker.state is sq.CircuitState.OPEN
            await trio.sleep(5.0)
            await client.fetch_query(opts)
            await trio.testing.wait_all_tasks_blocked()
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.data) == (QueryStatus.SUCCESS, "v1")
        assert breaker.state is sq.CircuitState.CLOSED

    def test_repr(self) -> None:
        """NOT_MODIFIED is one object that says what it is."""
        assert repr(sq.NOT_MODIFIED) == "NOT_MODIFIED"


class TestMeta:
    def test_defaults_to_an_empty_read_only_mapping(self) -> None:
        """meta is empty unless given."""
        meta = sq.QueryOptions(query_key=KEY, query_fn=Revalidating()).meta
        assert isinstance(meta, types.MappingProxyType)
        assert dict(meta) == {}

    @pytest.mark.parametrize("value", [None, ["url"], "url"])
    def test_must_be_a_mapping(self, value: Any) -> None:
        """Anything but a mapping is a TypeError naming meta."""
        with pytest.raises(TypeError, match=r"^meta must be a mapping, got "):
            sq.QueryOptions(query_key=KEY, query_fn=Revalidating(), meta=value)
