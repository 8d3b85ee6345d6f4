"""Specification of serial mutations: ``MutationOptions(scope=...)`` and ``is_mutating``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery._mutation_runs import MutationRuns


class Writes:
    """An async ``mutation_fn`` taking 1 s that logs (variables, start, end) in trio time."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, float, float]] = []
        self.started: list[Any] = []

    async def __call__(self, variables: Any) -> str:
        start = trio.current_time()
        self.started.append(variables)
        await trio.sleep(1.0)
        self.log.append((variables, start, trio.current_time()))
        return f"saved {variables}"


class TestScopeOption:
    @pytest.mark.parametrize("bad", ["", 42, b"x", ("a",)])
    def test_a_scope_is_a_non_empty_str(self, bad: Any) -> None:
        """An empty or non-str scope is refused when the options are made, naming it."""
        with pytest.raises(sq.InvalidOptionError, match=r"^scope must be a non-empty str or None"):
            sq.MutationOptions(mutation_fn=Writes(), scope=bad)

    def test_the_default_is_no_scope(self) -> None:
        """Without a scope, mutations never wait for each other."""
        assert sq.MutationOptions(mutation_fn=Writes()).scope is None


class TestSerialMutations:
    async def test_one_scope_runs_one_at_a_time_in_call_order(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three calls in one scope: each starts when the one before it has returned."""
        writes = Writes()
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            m = client.mutation(sq.MutationOptions(mutation_fn=writes, scope="account:42"))
            for n in (3, 1, 2):  # called in this order (each call parks before the next)
                nursery.start_soon(m.mutate, n)
                await wait_all_tasks_blocked()
        assert writes.log == [(3, 0.0, 1.0), (1, 1.0, 2.0), (2, 2.0, 3.0)]

    async def test_the_scope_is_shared_by_every_mutation_of_the_client(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two Mutation objects with one scope queue together, in call order."""
        writes = Writes()
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            first = client.mutation(sq.MutationOptions(mutation_fn=writes, scope="s"))
            second = client.mutation(sq.MutationOptions(mutation_fn=writes, scope="s"))
            nursery.start_soon(second.mutate, "b")
            await wait_all_tasks_blocked()
            nursery.start_soon(first.mutate, "a")
        assert writes.log == [("b", 0.0, 1.0), ("a", 1.0, 2.0)]

    async def test_on_mutate_waits_for_its_turn_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The whole call is serial: the second on_mutate runs after the first call settled."""
        seen: list[tuple[str, Any, float]] = []
        writes = Writes()

        def on_mutate(variables: Any) -> None:
            seen.append(("on_mutate", variables, trio.current_time()))

        def on_settled(_data: Any, _error: Any, variables: Any, _context: Any) -> None:
            seen.append(("on_settled", variables, trio.current_time()))

        options = sq.MutationOptions(
            mutation_fn=writes, on_mutate=on_mutate, on_settled=on_settled, scope="s"
        )
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            m = client.mutation(options)
            nursery.start_soon(m.mutate, 1)
            await wait_all_tasks_blocked()
            nursery.start_soon(m.mutate, 2)
        assert seen == [
            ("on_mutate", 1, 0.0),
            ("on_settled", 1, 1.0),
            ("on_mutate", 2, 1.0),
            ("on_settled", 2, 2.0),
        ]

    async def test_different_scopes_and_no_scope_run_concurrently(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Scopes "a", "b" and no scope: all three start at once."""
        writes = Writes()
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            for scope in ("a", "b", None):
                m = client.mutation(sq.MutationOptions(mutation_fn=writes, scope=scope))
                nursery.start_soon(m.mutate, scope)
        assert sorted(writes.log, key=repr) == sorted(
            [("a", 0.0, 1.0), ("b", 0.0, 1.0), (None, 0.0, 1.0)], key=repr
        )

    async def test_a_failed_mutation_frees_the_scope(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The first call fails (its error raised to its caller); the second runs next."""
        calls: list[tuple[Any, float]] = []

        async def write(variables: Any) -> Any:
            calls.append((variables, trio.current_time()))
            await trio.sleep(1.0)
            if variables == 1:
                raise ValueError("refused")
            return variables

        errors: list[str] = []

        async def mutate(m: sq.Mutation[Any, Any], n: int) -> None:
            try:
                await m.mutate(n)
            except ValueError as exc:
                errors.append(str(exc))

        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            m = client.mutation(sq.MutationOptions(mutation_fn=write, scope="s"))
            nursery.start_soon(mutate, m, 1)
            await wait_all_tasks_blocked()
            nursery.start_soon(mutate, m, 2)
        assert (calls, errors) == ([(1, 0.0), (2, 1.0)], ["refused"])


class TestCancellation:
    async def test_a_cancelled_waiting_call_gives_up_its_turn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Call 2 is cancelled while call 1 runs: call 3 runs right after call 1; 2 never runs."""
        writes = Writes()
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            m = client.mutation(sq.MutationOptions(mutation_fn=writes, scope="s"))
            nursery.start_soon(m.mutate, 1)
            await wait_all_tasks_blocked()
            waiting = trio.CancelScope()
            nursery.start_soon(_in_scope, waiting, m.mutate, 2)
            await wait_all_tasks_blocked()
            nursery.start_soon(m.mutate, 3)
            await wait_all_tasks_blocked()
            assert client.is_mutating() == 3
            waiting.cancel()
        assert writes.log == [(1, 0.0, 1.0), (3, 1.0, 2.0)]
        assert client.is_mutating() == 0

    async def test_a_cancelled_running_call_frees_the_scope(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Call 1 is cancelled 0.5 s into its write: call 2 starts then, not at 1 s."""
        writes = Writes()
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            m = client.mutation(sq.MutationOptions(mutation_fn=writes, scope="s"))
            running = trio.CancelScope()
            nursery.start_soon(_in_scope, running, m.mutate, 1)
            await wait_all_tasks_blocked()
            nursery.start_soon(m.mutate, 2)
            await trio.sleep(0.5)
            running.cancel()
        assert (writes.started, writes.log) == ([1, 2], [(2, 0.5, 1.5)])
        assert m.state.status is sq.MutationStatus.SUCCESS


class TestIsMutating:
    async def test_counts_calls_until_they_return(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two calls of one scope and one without: 3, then 1 (the second of the scope), then 0."""
        writes = Writes()
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            assert client.is_mutating() == 0
            scoped = client.mutation(sq.MutationOptions(mutation_fn=writes, scope="s"))
            free = client.mutation(sq.MutationOptions(mutation_fn=writes))
            nursery.start_soon(scoped.mutate, 1)
            await wait_all_tasks_blocked()
            nursery.start_soon(scoped.mutate, 2)
            nursery.start_soon(free.mutate, 3)
            await wait_all_tasks_blocked()
            assert client.is_mutating() == 3
            await trio.sleep(1.5)
            assert client.is_mutating() == 1
            await trio.sleep(1.0)
            assert client.is_mutating() == 0


async def _in_scope(scope: trio.CancelScope, fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` under ``scope`` (so a test can cancel one task of a nursery)."""
    with scope:
        await fn(*args)


class TestScopeQueues:
    async def test_a_scope_keeps_no_queue_once_nobody_holds_or_waits_for_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Scopes come and go with their mutations: none is left after runs and cancellations."""
        runs = MutationRuns()

        async def hold(scope: str, seconds: float) -> None:
            async with runs.run(scope):
                await trio.sleep(seconds)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, "a", 1.0)
            await wait_all_tasks_blocked()
            waiting = trio.CancelScope()
            nursery.start_soon(_in_scope, waiting, hold, "a", 1.0)
            nursery.start_soon(hold, "b", 1.0)
            await wait_all_tasks_blocked()
            assert (runs.running, runs.scopes) == (3, 2)
            waiting.cancel()
        assert (runs.running, runs.scopes) == (0, 0)
