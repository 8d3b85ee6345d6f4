"""Specification of retry by error: ``retry(failure_count, error)``, ``retry_delay(n, error)``."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery import QueryStatus
from tests.stackquery.client_origin import Failure, Origin

KEY = ("report", 7)


class NotFound(Exception):
    """A 404: asking again will not help."""


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


def not_a_404(_failure_count: int, error: BaseException) -> bool:
    return not isinstance(error, NotFound)


class TestRetryPredicate:
    async def test_a_404_costs_one_origin_call_with_a_predicate(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry=not_a_404: a NotFound fails at once (one call), no retry, no delay slept."""
        origin = Origin(NotFound("no report 7"))
        async with sq.open_query_client(sq.QueryClientConfig(retry_delay=1.0)) as client:
            with pytest.raises(NotFound, match=r"^no report 7$"):
                await client.fetch_query(options(origin, retry=not_a_404))
            assert origin.calls == 1
            assert trio.current_time() == 0.0
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.fetch_failure_count) == (QueryStatus.ERROR, 1)

    async def test_an_int_retry_still_retries_a_404(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry=3 (an int): a NotFound costs four origin calls, as before."""
        origin = Origin(NotFound("no report 7"))
        async with sq.open_query_client(sq.QueryClientConfig(retry_delay=1.0)) as client:
            with pytest.raises(NotFound):
                await client.fetch_query(options(origin, retry=3))
            assert origin.calls == 4

    async def test_the_predicate_sees_the_0_based_failure_count_and_the_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The predicate gets (0, e1), (1, e2), (2, e3): retry=lambda n, e: n < 2 makes 3 calls."""
        seen: list[tuple[int, str]] = []

        def retry(failure_count: int, error: BaseException) -> bool:
            seen.append((failure_count, str(error)))
            return failure_count < 2

        origin = Origin(Failure("down"))
        async with sq.open_query_client(sq.QueryClientConfig(retry_delay=1.0)) as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=retry))
        assert origin.calls == 3
        assert origin.started_at == [0.0, 1.0, 2.0]
        assert seen == [(0, "down"), (1, "down"), (2, "down")]

    async def test_transient_errors_are_retried_until_success(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two Failures then a value: the predicate retries them; the third call's value lands."""
        origin = Origin(Failure("blip"), Failure("blip"), "report")
        async with sq.open_query_client(sq.QueryClientConfig(retry_delay=1.0)) as client:
            assert await client.fetch_query(options(origin, retry=not_a_404)) == "report"
            assert origin.calls == 3
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.data) == (QueryStatus.SUCCESS, "report")

    async def test_the_config_predicate_applies_when_the_query_gives_none(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(retry=predicate) decides for a query that leaves retry None."""
        origin = Origin(NotFound("gone"))
        config = sq.QueryClientConfig(retry=not_a_404, retry_delay=1.0)
        async with sq.open_query_client(config) as client:
            with pytest.raises(NotFound):
                await client.fetch_query(options(origin))
            assert origin.calls == 1

    async def test_a_predicate_that_raises_fails_the_fetch_with_its_error_as_cause(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A raising predicate: InvalidOptionError caused by its error; one call; no crash."""

        def broken(_n: int, _error: BaseException) -> bool:
            raise KeyError("oops")

        origin = Origin(Failure("down"), "fine")
        async with sq.open_query_client(sq.QueryClientConfig(retry_delay=1.0)) as client:
            with pytest.raises(
                sq.InvalidOptionError, match=r"^retry\(0, Failure\) raised KeyError: 'oops'$"
            ) as caught:
                await client.fetch_query(options(origin, retry=broken))
            assert isinstance(caught.value.__cause__, KeyError)
            assert origin.calls == 1
            assert trio.current_time() == 0.0
            # The key's actor did not crash: the next fetch works.
            assert await client.fetch_query(options(origin, retry=0)) == "fine"
            assert client.statistics().restarts == 0


class TestRetryDelayWithError:
    async def test_a_two_argument_retry_delay_gets_the_count_and_the_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry_delay(n, error): a RateLimited waits 10 s, anything else 1 s."""

        class RateLimited(Exception):
            pass

        def delay(failure_count: int, error: BaseException) -> float:
            return 10.0 if isinstance(error, RateLimited) else 1.0 + failure_count

        origin = Origin(RateLimited("slow down"), Failure("down"), "ok")
        async with sq.open_query_client() as client:
            result = await client.fetch_query(options(origin, retry=2, retry_delay=delay))
        assert result == "ok"
        assert origin.started_at == [0.0, 10.0, 12.0]

    async def test_a_one_argument_retry_delay_gets_the_count_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry_delay(n) keeps its meaning: waits of 1, 2 s before retries 1 and 2."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=2, retry_delay=lambda n: n + 1.0))
        assert origin.started_at == [0.0, 1.0, 3.0]

    def test_the_arity_is_decided_once_when_the_options_are_built(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """inspect.signature runs at construction; the compiled delay never inspects again."""
        import inspect

        opts = options(Origin(), retry_delay=lambda n, e: 2.0)
        delay = opts.retry_rule.delay
        assert delay is not None

        def no_signature(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("signature read per call")

        monkeypatch.setattr(inspect, "signature", no_signature)
        assert delay(0, Failure("x")) == 2.0
        assert delay(5, Failure("x")) == 2.0

    async def test_a_two_argument_config_delay_applies_to_queries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(retry_delay=f(n, error)) is used when the query gives none."""
        origin = Origin(Failure("down"))
        config = sq.QueryClientConfig(retry=1, retry_delay=lambda n, e: 7.0)
        async with sq.open_query_client(config) as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin))
        assert origin.started_at == [0.0, 7.0]


class TestMutationRetry:
    async def test_a_mutation_retries_by_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """MutationOptions(retry=predicate): a NotFound fails after one attempt, failure_count 1."""
        calls: list[int] = []

        async def write(payload: int) -> int:
            calls.append(payload)
            raise NotFound("no row")

        async with sq.open_query_client() as client:
            m = client.mutation(sq.MutationOptions(mutation_fn=write, retry=not_a_404))
            with pytest.raises(NotFound):
                await m.mutate(1)
            assert calls == [1]
            assert (m.state.status, m.state.failure_count) == (sq.MutationStatus.ERROR, 1)

    async def test_a_mutation_counts_every_attempt_a_predicate_allowed(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry=lambda n, e: n < 2 with retry_delay(n, e)=3: three attempts, 3 s apart."""
        started: list[float] = []

        async def write(_payload: int) -> int:
            started.append(trio.current_time())
            raise Failure("down")

        async with sq.open_query_client() as client:
            m = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write, retry=lambda n, e: n < 2, retry_delay=lambda n, e: 3.0
                )
            )
            with pytest.raises(Failure):
                await m.mutate(1)
        assert started == [0.0, 3.0, 6.0]
        assert m.state.failure_count == 3


def two_required(a: int, b: int, c: int) -> bool:
    return True


class TestBadRetryInput:
    @pytest.mark.parametrize(
        "make",
        [
            lambda **kw: sq.QueryOptions(query_key=KEY, query_fn=Origin(), **kw),
            lambda **kw: sq.QueryClientConfig(**kw),
            lambda **kw: sq.MutationOptions(mutation_fn=Origin(), **kw),
        ],
        ids=["QueryOptions", "QueryClientConfig", "MutationOptions"],
    )
    @pytest.mark.parametrize(
        ("kwargs", "pattern"),
        [
            ({"retry": lambda: True}, r"^retry must be an int >= 0 or a function retry"),
            ({"retry": two_required}, r"which does not take 2 arguments$"),
            ({"retry": lambda n: True}, r"which does not take 2 arguments$"),
            ({"retry_delay": lambda: 1.0}, r"^retry_delay must be a number of seconds, "),
            ({"retry_delay": functools.partial(two_required, 1, 2, 3)}, r"which takes neither$"),
        ],
    )
    def test_a_callable_of_the_wrong_arity_is_a_type_error_at_construction(
        self, make: Any, kwargs: dict[str, Any], pattern: str
    ) -> None:
        """retry must take (failure_count, error); retry_delay (n) or (n, error)."""
        with pytest.raises(TypeError, match=pattern):
            make(**kwargs)

    @pytest.mark.parametrize("retry", ["3", 1.5, -1, True])
    def test_a_retry_that_is_neither_int_nor_callable_is_refused(self, retry: Any) -> None:
        """A str, float, negative or bool retry: InvalidOptionError naming it."""
        with pytest.raises(sq.InvalidOptionError, match=r"^retry must be an int >= 0, got "):
            sq.QueryOptions(query_key=KEY, query_fn=Origin(), retry=retry)

    def test_a_builtin_without_signature_is_accepted_as_a_one_argument_delay(self) -> None:
        """A callable whose signature cannot be read is called with the count, as always."""
        opts = sq.QueryOptions(query_key=KEY, query_fn=Origin(), retry_delay=float)
        assert opts.retry_rule.delay is not None
        assert opts.retry_rule.delay(3, Failure("x")) == 3.0
