"""Specification of ``QueryClient.mutation``: callbacks, retries, state, cancellation, rollback."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import MutationState, MutationStatus
from tests.stackquery.client_origin import Failure, Origin

IDLE = MutationState()


class Write:
    """A scripted async ``mutation_fn``: counts calls, takes ``delay``, fails ``fails`` times."""

    def __init__(self, *, delay: float = 0.0, fails: int = 0, result: Any = None) -> None:
        self.delay = delay
        self.fails = fails
        self.result = result
        self.calls: list[Any] = []
        self.started_at: list[float] = []

    async def __call__(self, variables: Any) -> Any:
        self.calls.append(variables)
        self.started_at.append(trio.current_time())
        await trio.sleep(self.delay)
        if len(self.calls) <= self.fails:
            raise Failure(f"write {len(self.calls)} failed")
        return self.result if self.result is not None else f"saved {variables}"


class Log:
    """Records every callback call as (name, args), for sync and async callbacks alike."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def sync(self, name: str, returns: Any = None) -> Any:
        def callback(*args: Any) -> Any:
            self.calls.append((name, args))
            return returns

        return callback

    def async_(self, name: str, returns: Any = None) -> Any:
        async def callback(*args: Any) -> Any:
            await trio.sleep(1.0)
            self.calls.append((name, args))
            return returns

        return callback


def raising(name: str, error: Exception) -> Any:
    def callback(*_args: Any) -> Any:
        raise error

    return callback


class TestMutationOptions:
    def test_mutation_fn_must_be_callable(self) -> None:
        """A non-callable mutation_fn is a TypeError naming it."""
        with pytest.raises(TypeError, match=r"^mutation_fn must be callable, got int: 3$"):
            sq.MutationOptions(mutation_fn=3)

    @pytest.mark.parametrize("name", ["on_mutate", "on_success", "on_error", "on_settled"])
    def test_callbacks_must_be_callable(self, name: str) -> None:
        """A non-callable callback is a TypeError naming it."""
        with pytest.raises(TypeError, match=rf"^{name} must be callable, got str: 'x'$"):
            sq.MutationOptions(mutation_fn=Write(), **{name: "x"})

    @pytest.mark.parametrize("retry", [-1, None, True, 1.5])
    def test_retry_must_be_a_non_negative_int(self, retry: Any) -> None:
        """retry below 0, None, a bool or a float is an InvalidOptionError."""
        with pytest.raises(sq.InvalidOptionError, match=r"^retry must be an int >= 0, got "):
            sq.MutationOptions(mutation_fn=Write(), retry=retry)

    def test_retry_delay_must_not_be_negative(self) -> None:
        """A negative retry_delay is an InvalidOptionError."""
        with pytest.raises(
            sq.InvalidOptionError, match=r"^retry_delay must be >= 0 seconds, got -1$"
        ):
            sq.MutationOptions(mutation_fn=Write(), retry_delay=-1)

    def test_defaults(self) -> None:
        """No retry, the client's retry_delay, no callbacks; an async callable is awaited."""
        options = sq.MutationOptions(mutation_fn=Write())
        assert (options.retry, options.retry_delay, options.on_mutate, options.is_async) == (
            0,
            None,
            None,
            True,
        )
        assert sq.MutationOptions(mutation_fn=lambda v: v).is_async is False

    async def test_client_mutation_needs_mutation_options(self) -> None:
        """client.mutation with anything but MutationOptions is a TypeError."""
        async with sq.open_query_client() as client:
            with pytest.raises(TypeError, match=r"^options must be a MutationOptions, got dict$"):
                client.mutation({"mutation_fn": Write()})  # type: ignore[arg-type]

    async def test_closed_client(self) -> None:
        """A closed client makes no mutation, and a mutation of it does not run."""
        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=write))
        with pytest.raises(sq.ClientClosedError):
            client.mutation(sq.MutationOptions(mutation_fn=write))
        with pytest.raises(sq.ClientClosedError):
            await mutation.mutate(1)
        assert write.calls == []
        assert mutation.state == IDLE


class TestMutate:
    async def test_returns_what_mutation_fn_returned(self) -> None:
        """mutate awaits an async mutation_fn with the variables and returns its result."""
        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=write))
            assert await mutation.mutate({"id": 1}) == "saved {'id': 1}"
        assert write.calls == [{"id": 1}]

    async def test_sync_mutation_fn_runs_in_a_worker_thread(self) -> None:
        """A plain function runs in a worker thread, not in trio's thread."""
        threads: list[int] = []

        def write(variables: int) -> int:
            threads.append(threading.get_ident())
            return variables * 2

        async with sq.open_query_client() as client:
            assert await client.mutation(sq.MutationOptions(mutation_fn=write)).mutate(21) == 42
        assert len(threads) == 1
        assert threads[0] != threading.get_ident()

    async def test_sync_mutation_fn_returning_an_awaitable(self) -> None:
        """A lambda around an async function: its awaitable is awaited."""
        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=lambda v: write(v)))
            assert await mutation.mutate(7) == "saved 7"

    async def test_error_is_raised_to_the_caller(self) -> None:
        """mutation_fn's error (the same object) is raised by mutate."""
        errors: list[BaseException] = []
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=Write(fails=1), on_error=lambda e, v, c: errors.append(e)
                )
            )
            with pytest.raises(Failure, match=r"^write 1 failed$") as info:
                await mutation.mutate(1)
        assert errors == [info.value]

    async def test_concurrent_calls_each_get_their_own_result(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two overlapping mutate calls run mutation_fn twice and each returns its own result."""
        results: dict[int, Any] = {}

        async def write(variables: int) -> int:
            await trio.sleep(10 - variables)
            return variables * 100

        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=write))

            async def call(variables: int) -> None:
                results[variables] = await mutation.mutate(variables)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, 1)
                await wait_all_tasks_blocked()
                nursery.start_soon(call, 2)
        assert results == {1: 100, 2: 200}


class TestCallbacks:
    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_success_order_and_arguments(
        self, kind: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """on_mutate, then on_success and on_settled with data, variables and the context."""
        log = Log()
        make = log.sync if kind == "sync" else log.async_
        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write,
                    on_mutate=make("on_mutate", returns={"ctx": 1}),
                    on_success=make("on_success"),
                    on_error=make("on_error"),
                    on_settled=make("on_settled"),
                )
            )
            assert await mutation.mutate("a") == "saved a"
        assert log.calls == [
            ("on_mutate", ("a",)),
            ("on_success", ("saved a", "a", {"ctx": 1})),
            ("on_settled", ("saved a", None, "a", {"ctx": 1})),
        ]

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_error_order_and_arguments(
        self, kind: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """on_mutate, then on_error and on_settled with the error, variables and context."""
        log = Log()
        make = log.sync if kind == "sync" else log.async_
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=Write(fails=1),
                    on_mutate=make("on_mutate", returns="ctx"),
                    on_success=make("on_success"),
                    on_error=make("on_error"),
                    on_settled=make("on_settled"),
                )
            )
            with pytest.raises(Failure) as info:
                await mutation.mutate("a")
        assert log.calls == [
            ("on_mutate", ("a",)),
            ("on_error", (info.value, "a", "ctx")),
            ("on_settled", (None, info.value, "a", "ctx")),
        ]

    async def test_raising_on_mutate_aborts_the_mutation(self) -> None:
        """on_mutate raising: no mutation_fn; on_error and on_settled get its error, no context."""
        log = Log()
        write = Write()
        boom = ValueError("no optimistic update")
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write,
                    on_mutate=raising("on_mutate", boom),
                    on_success=log.sync("on_success"),
                    on_error=log.sync("on_error"),
                    on_settled=log.sync("on_settled"),
                )
            )
            with pytest.raises(ValueError, match=r"^no optimistic update$"):
                await mutation.mutate("a")
            state = mutation.state
        assert write.calls == []
        assert log.calls == [
            ("on_error", (boom, "a", None)),
            ("on_settled", (None, boom, "a", None)),
        ]
        assert (state.status, state.error, state.failure_count) == (MutationStatus.ERROR, boom, 0)

    async def test_raising_on_success_is_logged_and_the_result_stands(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """on_success raising is logged; on_settled still runs, mutate returns, no second write."""
        log = Log()
        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write,
                    retry=3,
                    on_success=raising("on_success", RuntimeError("listener bug")),
                    on_error=log.sync("on_error"),
                    on_settled=log.sync("on_settled"),
                )
            )
            with caplog.at_level(logging.ERROR, logger="stackquery.mutation"):
                assert await mutation.mutate(1) == "saved 1"
            assert mutation.state.status is MutationStatus.SUCCESS
        assert write.calls == [1]
        assert log.calls == [("on_settled", ("saved 1", None, 1, None))]
        assert [r.getMessage().split(" callback")[0] for r in caplog.records] == ["on_success"]

    async def test_raising_on_error_and_on_settled_are_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """on_error and on_settled raising are logged; mutate raises mutation_fn's error."""
        write = Write(fails=1)
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write,
                    on_error=raising("on_error", RuntimeError("e")),
                    on_settled=raising("on_settled", RuntimeError("s")),
                )
            )
            with (
                caplog.at_level(logging.ERROR, logger="stackquery.mutation"),
                pytest.raises(Failure, match=r"^write 1 failed$"),
            ):
                await mutation.mutate(1)
        assert write.calls == [1]
        assert [r.getMessage().split(" callback")[0] for r in caplog.records] == [
            "on_error",
            "on_settled",
        ]


class TestRetry:
    async def test_retries_with_retry_delay(self, autojump_clock: trio.testing.MockClock) -> None:
        """retry=2 with a delay of 5 s: three attempts, 5 s apart, the third succeeds."""
        write = Write(fails=2)
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(mutation_fn=write, retry=2, retry_delay=5.0)
            )
            assert await mutation.mutate("x") == "saved x"
        assert write.started_at == [0.0, 5.0, 10.0]

    async def test_retry_delay_function_gets_the_retry_number(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A retry_delay function is called with 0, 1 ... and its seconds are waited."""
        numbers: list[int] = []

        def delay(attempt: int) -> float:
            numbers.append(attempt)
            return 10.0 * (attempt + 1)

        write = Write(fails=5)
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(mutation_fn=write, retry=2, retry_delay=delay)
            )
            with pytest.raises(Failure, match=r"^write 3 failed$"):
                await mutation.mutate("x")
            assert mutation.state.failure_count == 3
        assert numbers == [0, 1]
        assert write.started_at == [0.0, 10.0, 30.0]

    async def test_no_retry_delay_means_the_clients(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry_delay=None waits the client config's retry_delay."""
        write = Write(fails=1)
        async with sq.open_query_client(sq.QueryClientConfig(retry_delay=7.0)) as client:
            await client.mutation(sq.MutationOptions(mutation_fn=write, retry=1)).mutate(0)
        assert write.started_at == [0.0, 7.0]

    async def test_no_retry_by_default(self) -> None:
        """A mutation is not retried unless asked: one attempt, then the error."""
        write = Write(fails=1)
        async with sq.open_query_client(sq.QueryClientConfig(retry=5, retry_delay=0)) as client:
            with pytest.raises(Failure):
                await client.mutation(sq.MutationOptions(mutation_fn=write)).mutate(0)
        assert write.calls == [0]


class Seen:
    """A mutation listener recording (time, status, data, error, variables, failure_count)."""

    def __init__(self) -> None:
        self.states: list[MutationState[Any]] = []
        self.calls: list[tuple[float, str, Any, Any, Any, int]] = []

    def __call__(self, state: MutationState[Any]) -> None:
        self.states.append(state)
        error = str(state.error) if state.error is not None else None
        self.calls.append(
            (
                trio.current_time(),
                state.status.value,
                state.data,
                error,
                state.variables,
                state.failure_count,
            )
        )


class TestState:
    async def test_listener_is_called_at_once_then_on_each_change(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """subscribe calls the listener with idle at once (no checkpoint), then pending, success."""
        seen = Seen()
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=Write(delay=2.0)))
            with trio.testing.assert_no_checkpoints():
                mutation.subscribe(seen)
            assert seen.states == [IDLE]
            await trio.sleep(1.0)
            await mutation.mutate("a")
            wall = client.clock.wall(1.0)
        assert seen.calls == [
            (0.0, "idle", None, None, None, 0),
            (1.0, "pending", None, None, "a", 0),
            (3.0, "success", "saved a", None, "a", 0),
        ]
        assert [s.submitted_at for s in seen.states] == [None, wall, wall]

    async def test_states_through_retries_and_failure(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each failed attempt before a retry bumps failure_count; the last failure sets error."""
        seen = Seen()
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(mutation_fn=Write(fails=9), retry=2, retry_delay=1.0)
            )
            mutation.subscribe(seen)
            with pytest.raises(Failure):
                await mutation.mutate("a")
        assert seen.calls == [
            (0.0, "idle", None, None, None, 0),
            (0.0, "pending", None, None, "a", 0),
            (0.0, "pending", None, None, "a", 1),
            (1.0, "pending", None, None, "a", 2),
            (2.0, "error", None, "write 3 failed", "a", 3),
        ]

    async def test_success_after_a_retry_resets_failure_count(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A success after failed attempts reports failure_count 0."""
        seen = Seen()
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(mutation_fn=Write(fails=1), retry=1, retry_delay=1.0)
            )
            mutation.subscribe(seen)
            await mutation.mutate("a")
        assert [(c[1], c[5]) for c in seen.calls] == [
            ("idle", 0),
            ("pending", 0),
            ("pending", 1),
            ("success", 0),
        ]

    async def test_state_follows_the_latest_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An older call settling after a newer one started does not change the state."""
        seen = Seen()

        async def write(variables: int) -> int:
            await trio.sleep(variables)
            return variables

        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=write))
            mutation.subscribe(seen)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mutation.mutate, 10)
                await trio.sleep(1.0)
                nursery.start_soon(mutation.mutate, 2)
        assert seen.calls == [
            (0.0, "idle", None, None, None, 0),
            (0.0, "pending", None, None, 10, 0),
            (1.0, "pending", None, None, 2, 0),
            (3.0, "success", 2, None, 2, 0),
        ]

    async def test_unsubscribe_is_idempotent(self) -> None:
        """After unsubscribe (called twice) the listener hears nothing more."""
        seen = Seen()
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=Write()))
            unsubscribe = mutation.subscribe(seen)
            unsubscribe()
            unsubscribe()
            await mutation.mutate(1)
        assert seen.states == [IDLE]

    async def test_raising_listener_is_logged_and_others_still_hear(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listener that raises is logged each time; the next listener and the mutation go on."""
        seen = Seen()

        def bad(state: MutationState[Any]) -> None:
            raise RuntimeError("listener bug")

        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=write))
            with caplog.at_level(logging.ERROR, logger="stackquery.mutation"):
                mutation.subscribe(bad)
                mutation.subscribe(seen)
                assert await mutation.mutate(1) == "saved 1"
        assert [c[1] for c in seen.calls] == ["idle", "pending", "success"]
        assert len(caplog.records) == 3
        assert write.calls == [1]

    async def test_listener_must_be_callable(self) -> None:
        """subscribe with a non-callable is a TypeError."""
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=Write()))
            with pytest.raises(TypeError, match=r"^listener must be callable, got int$"):
                mutation.subscribe(3)  # type: ignore[arg-type]

    async def test_reset(self, autojump_clock: trio.testing.MockClock) -> None:
        """reset puts the state back to idle; a call in flight returns but no longer reports."""
        seen = Seen()
        results: list[Any] = []
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=Write(delay=5.0)))
            mutation.subscribe(seen)
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    results.append(await mutation.mutate("a"))

                nursery.start_soon(call)
                await trio.sleep(1.0)
                mutation.reset()
        assert results == ["saved a"]
        assert [(c[0], c[1]) for c in seen.calls] == [
            (0.0, "idle"),
            (0.0, "pending"),
            (1.0, "idle"),
        ]
        assert mutation.state == IDLE


class TestCancellation:
    async def test_cancelled_mutate_raises_and_goes_back_to_idle(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled in mutation_fn: Cancelled propagates, no on_error/on_settled, state idle."""
        log = Log()
        seen = Seen()
        write = Write(delay=10.0)
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write,
                    on_mutate=log.sync("on_mutate"),
                    on_success=log.sync("on_success"),
                    on_error=log.sync("on_error"),
                    on_settled=log.sync("on_settled"),
                )
            )
            mutation.subscribe(seen)
            with trio.move_on_after(3.0) as scope:
                await mutation.mutate("a")
        assert scope.cancelled_caught
        assert log.calls == [("on_mutate", ("a",))]
        assert [(c[0], c[1]) for c in seen.calls] == [
            (0.0, "idle"),
            (0.0, "pending"),
            (3.0, "idle"),
        ]

    async def test_cancelled_in_a_callback(self, autojump_clock: trio.testing.MockClock) -> None:
        """Cancelled inside an async on_success: it propagates, on_settled is not called, idle."""
        log = Log()
        write = Write()
        async with sq.open_query_client() as client:
            mutation = client.mutation(
                sq.MutationOptions(
                    mutation_fn=write,
                    on_success=log.async_("on_success"),  # sleeps 1 s first
                    on_settled=log.sync("on_settled"),
                )
            )
            with trio.move_on_after(0.5) as scope:
                await mutation.mutate("a")
        assert scope.cancelled_caught
        assert write.calls == ["a"]
        assert log.calls == []
        assert mutation.state == IDLE

    async def test_cancelled_sync_mutation_fn_is_abandoned(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A worker-thread mutation_fn cancelled is abandoned: mutate raises at once."""
        release = threading.Event()
        finished = threading.Event()

        def write(variables: int) -> int:
            release.wait(10)
            finished.set()
            return variables

        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=write))
            with trio.move_on_after(1.0) as scope:
                await mutation.mutate(1)
            assert scope.cancelled_caught
            assert not finished.is_set()
            assert mutation.state == IDLE
        release.set()
        assert finished.wait(10)

    async def test_cancelled_older_call_leaves_the_newer_calls_state(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelling a call that is not the latest does not touch the state."""
        async with sq.open_query_client() as client:
            mutation = client.mutation(sq.MutationOptions(mutation_fn=Write(delay=10.0)))
            async with trio.open_nursery() as nursery:
                cancel_first = trio.CancelScope()

                async def first() -> None:
                    with cancel_first:
                        await mutation.mutate("first")

                nursery.start_soon(first)
                await trio.sleep(1.0)
                nursery.start_soon(mutation.mutate, "second")
                await trio.sleep(1.0)
                cancel_first.cancel()
                await wait_all_tasks_blocked()
                assert (mutation.state.status, mutation.state.variables) == (
                    MutationStatus.PENDING,
                    "second",
                )
            assert (mutation.state.status, mutation.state.data) == (
                MutationStatus.SUCCESS,
                "saved second",
            )


TODOS = ("todos",)


class Server:
    """The origin of the todo list; ``fail_writes`` makes every write fail."""

    def __init__(self) -> None:
        self.todos = ["a"]
        self.reads = 0
        self.fail_writes = False

    async def read(self) -> dict[str, Any]:
        self.reads += 1
        await trio.sleep(1.0)
        return {"todos": list(self.todos), "read": self.reads}

    async def write(self, todo: str) -> str:
        await trio.sleep(2.0)
        if self.fail_writes:
            raise Failure("write refused")
        self.todos.append(todo)
        return todo


def optimistic(client: sq.QueryClient, server: Server) -> sq.MutationOptions[str, str]:
    """The optimistic-update pattern: cancel, snapshot, set, roll back on error, invalidate."""

    async def on_mutate(todo: str) -> Any:
        await client.cancel_queries(TODOS)
        previous = client.get_query_data(TODOS)
        await client.set_query_data(TODOS, lambda old: {**old, "todos": [*old["todos"], todo]})
        return previous

    async def on_error(error: BaseException, todo: str, previous: Any) -> None:
        await client.set_query_data(TODOS, previous)

    async def on_settled(data: Any, error: BaseException | None, todo: str, previous: Any) -> None:
        await client.invalidate_queries(TODOS)

    return sq.MutationOptions(
        mutation_fn=server.write, on_mutate=on_mutate, on_error=on_error, on_settled=on_settled
    )


class TestOptimisticUpdate:
    async def test_failed_mutation_rolls_back_then_refetches(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observer sees the optimistic value, the rolled-back value, then the refetched one."""
        server = Server()
        server.fail_writes = True
        seen: list[tuple[float, str, Any]] = []
        async with sq.open_query_client() as client:
            observer = client.watch(sq.QueryOptions(query_key=TODOS, query_fn=server.read))
            observer.subscribe(lambda s: seen.append((trio.current_time(), s.status.value, s.data)))
            await trio.sleep(5.0)
            mutation = client.mutation(optimistic(client, server))
            with pytest.raises(Failure, match=r"^write refused$"):
                await mutation.mutate("b")
            await trio.sleep(5.0)
            assert mutation.state.status is MutationStatus.ERROR
        assert seen == [
            (0.0, "pending", None),
            (1.0, "success", {"todos": ["a"], "read": 1}),
            (5.0, "success", {"todos": ["a", "b"], "read": 1}),  # optimistic
            (7.0, "success", {"todos": ["a"], "read": 1}),  # rolled back
            (8.0, "success", {"todos": ["a"], "read": 2}),  # refetched after invalidation
        ]
        assert server.todos == ["a"]

    async def test_successful_mutation_keeps_the_update_and_refetches(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A successful write: the optimistic value stays until the refetch brings the server's."""
        server = Server()
        seen: list[tuple[float, Any]] = []
        async with sq.open_query_client() as client:
            observer = client.watch(sq.QueryOptions(query_key=TODOS, query_fn=server.read))
            observer.subscribe(lambda s: seen.append((trio.current_time(), s.data)))
            await trio.sleep(5.0)
            assert await client.mutation(optimistic(client, server)).mutate("b") == "b"
            await trio.sleep(5.0)
        assert seen == [
            (0.0, None),
            (1.0, {"todos": ["a"], "read": 1}),
            (5.0, {"todos": ["a", "b"], "read": 1}),
            (8.0, {"todos": ["a", "b"], "read": 2}),
        ]

    async def test_on_mutate_cancels_a_fetch_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refetch in flight is cancelled by on_mutate, so it cannot overwrite the update."""
        origin = Origin({"todos": ["a"]}, {"todos": ["stale"]}, {"todos": ["a", "b"]}, delay=3.0)
        server = Server()
        async with sq.open_query_client() as client:
            options = sq.QueryOptions(query_key=TODOS, query_fn=origin)
            assert await client.fetch_query(options) == {"todos": ["a"]}
            await client.invalidate_queries(TODOS)
            await client.prefetch_query(options)  # the refetch that would bring "stale"
            await trio.sleep(1.0)
            mutation = client.mutation(optimistic(client, server))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mutation.mutate, "b")
                await wait_all_tasks_blocked()
                assert client.get_query_data(TODOS) == {"todos": ["a", "b"]}
                await trio.sleep(2.5)  # past the time the cancelled refetch would have landed
                assert client.get_query_data(TODOS) == {"todos": ["a", "b"]}
        assert origin.cancelled == 1
