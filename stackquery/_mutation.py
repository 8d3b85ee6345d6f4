"""Mutations: a write to the origin, with callbacks for optimistic updates.

A :class:`Mutation` is made by :meth:`QueryClient.mutation` from
:class:`MutationOptions`.  Each :meth:`Mutation.mutate` call runs on its own
(two concurrent calls each get their own result); the mutation's observable
:class:`MutationState` follows the most recent call, as TanStack's
``useMutation`` does.

The callbacks follow TanStack Query's contract: ``on_mutate(variables)`` runs
first and its return value is the *context* the other callbacks receive, which
is where an optimistic update keeps what it needs to roll back::

    async def on_mutate(todo):
        await client.cancel_queries(("todos",))
        previous = client.get_query_data(("todos",))
        await client.set_query_data(("todos",), lambda old: [*old, todo])
        return previous

    async def on_error(error, todo, previous):
        await client.set_query_data(("todos",), previous)

    async def on_settled(data, error, todo, previous):
        await client.invalidate_queries(("todos",))
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from ._errors import InvalidOptionError
from ._option_checks import checked_retry_delay, is_async_callable, optional_callable, retry_count
from ._retry import call_with_retries
from ._retry import default_retry_delay as library_retry_delay
from ._retry_policy import DelayFn, RetryDelaySpec, RetryPolicy, RetryRule, delay_function

if TYPE_CHECKING:
    from ._clock import Clock
    from ._mutation_runs import MutationRuns
    from ._owners import QueryOwners

T = TypeVar("T")
V = TypeVar("V")
logger = logging.getLogger("stackquery.mutation")


class MutationStatus(enum.Enum):
    """Where the latest ``mutate`` call of a :class:`Mutation` stands."""

    IDLE = "idle"
    PENDING = "pending"
    SUCCESS = "success"
    ERROR = "error"


@attrs.frozen
class MutationState(Generic[T]):
    """What a :class:`Mutation`'s listeners see: its latest ``mutate`` call."""

    status: MutationStatus = MutationStatus.IDLE
    """``idle`` (never called, reset, or the last call was cancelled), ``pending``,
    ``success`` or ``error``."""
    data: T | None = None
    """What ``mutation_fn`` returned, once ``success``."""
    error: BaseException | None = None
    """Why the call failed, once ``error`` (``mutation_fn``'s error or ``on_mutate``'s)."""
    variables: Any = None
    """The argument ``mutate`` was called with."""
    failure_count: int = 0
    """Failed attempts of ``mutation_fn`` in this call (retries included); 0 after success."""
    submitted_at: float | None = None
    """Wall-clock time (client clock) the call started; ``None`` when idle."""


def _check_scope(_instance: object, _attribute: object, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidOptionError(
            f"scope must be a non-empty str or None, got {type(value).__name__}: {value!r:.100}"
        )


def _retries(_instance: object, attribute: object, value: Any) -> None:
    if value is None:
        raise InvalidOptionError("retry must be an int >= 0, got None")
    retry_count(_instance, attribute, value)


@attrs.frozen
class MutationOptions(Generic[T, V]):
    """What a mutation does and what runs around it.

    Every callback may be a plain function or an ``async def`` (a callback
    whose call returns an awaitable is awaited).  Callbacks run in the
    ``mutate`` caller's task.

    Raises (at construction):
        TypeError: ``mutation_fn`` or a callback is not callable.
        InvalidOptionError: ``retry`` is neither an int >= 0 nor callable,
            ``retry_delay`` is a negative or NaN number, or ``scope`` is not a non-empty
            str or ``None``.
        TypeError: a ``retry`` function that cannot be called as ``retry(failure_count,
            error)``, a ``retry_delay`` function taking neither one nor two arguments.
    """

    mutation_fn: Callable[[V], Any] = attrs.field()
    """Does the write: ``mutation_fn(variables)``; awaited if async, else run in a worker thread."""
    on_mutate: Callable[[V], Any] | None = attrs.field(
        default=None, validator=optional_callable("on_mutate")
    )
    """``on_mutate(variables)`` before ``mutation_fn``; returns the context (e.g. for rollback)."""
    on_success: Callable[[T, V, Any], object] | None = attrs.field(
        default=None, validator=optional_callable("on_success")
    )
    """``on_success(data, variables, context)`` after ``mutation_fn`` returned."""
    on_error: Callable[[BaseException, V, Any], object] | None = attrs.field(
        default=None, validator=optional_callable("on_error")
    )
    """``on_error(error, variables, context)`` after the mutation failed for good."""
    on_settled: Callable[[T | None, BaseException | None, V, Any], object] | None = attrs.field(
        default=None, validator=optional_callable("on_settled")
    )
    """``on_settled(data, error, variables, context)`` after ``on_success`` or ``on_error``."""
    retry: RetryPolicy = attrs.field(default=0, validator=_retries)
    """Retries after a failed attempt of ``mutation_fn`` (0, the default: fail at once), or
    ``retry(failure_count, error) -> bool`` (``failure_count``: failures before this one)."""
    retry_delay: RetryDelaySpec | None = attrs.field(default=None, validator=checked_retry_delay)
    """Seconds before a retry (a number, a function of the 0-based retry number, or of
    ``(failure_count, error)``); ``None``: the client's ``retry_delay``."""
    scope: str | None = attrs.field(default=None, validator=_check_scope)
    """Mutations of one client with the same scope (``"account:42"``) run one at a time,
    in the order of their ``mutate`` calls; ``None`` (the default): no waiting."""
    is_async: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``mutation_fn`` is awaited (True) or run in a worker thread."""
    retry_rule: RetryRule = attrs.field(init=False, repr=False, eq=False)
    """``retry`` and ``retry_delay`` compiled (a function's arity decided once)."""

    @mutation_fn.validator
    def _check_mutation_fn(self, _attribute: object, value: object) -> None:
        if not callable(value):
            raise TypeError(f"mutation_fn must be callable, got {type(value).__name__}: {value!r}")

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "is_async", is_async_callable(self.mutation_fn))
        object.__setattr__(self, "retry_rule", RetryRule.of(self.retry, self.retry_delay))


MutationListener = Callable[[MutationState[Any]], object]

_IDLE: MutationState[Any] = MutationState()


@attrs.define(eq=False)
class _Call(Generic[T]):
    """One ``mutate`` call: its number and what it has seen so far."""

    id: int
    pending: MutationState[T]
    failures: int = 0


class Mutation(Generic[T, V]):
    """Runs one kind of write, and reports its latest call to listeners.

    Made by :meth:`QueryClient.mutation`; not constructed directly.
    """

    def __init__(
        self,
        options: MutationOptions[T, V],
        *,
        owners: QueryOwners,
        clock: Clock,
        default_retry_delay: DelayFn | None,
        runs: MutationRuns,
    ) -> None:
        self._owners = owners
        self._runs = runs
        self._clock = clock
        self._default_retry_delay = default_retry_delay or delay_function(library_retry_delay)
        self.options = options
        self._state: MutationState[T] = _IDLE
        self._listeners: list[MutationListener] = []
        # Each call takes the next number; only the call holding the latest
        # one changes the state, so an older call settling late cannot hide
        # a newer one.
        self._call_id = 0

    @property
    def state(self) -> MutationState[T]:
        """The state of the latest ``mutate`` call; synchronous."""
        return self._state

    async def mutate(self, variables: V) -> T:
        """Run the mutation with ``variables`` and return what ``mutation_fn`` returned.

        In order: ``on_mutate(variables)`` (its return value is the context),
        ``mutation_fn(variables)`` with up to ``retry`` retries, then
        ``on_success(data, variables, context)`` or
        ``on_error(error, variables, context)``, then
        ``on_settled(data, error, variables, context)``; the state becomes
        ``success`` or ``error`` once they have run.  ``on_success``,
        ``on_error`` and ``on_settled`` raising is logged and changes nothing
        (the result stands, ``mutation_fn`` is not run again).  ``on_mutate``
        raising aborts the mutation with that error, as in TanStack Query:
        ``mutation_fn`` does not run, ``on_error`` and ``on_settled`` get the
        error with a ``None`` context, and ``mutate`` raises it.

        Cancelled (at any point before it returns), ``mutate`` raises
        ``Cancelled`` at once: ``on_error`` and ``on_settled`` are not called,
        so an optimistic update made by ``on_mutate`` is not rolled back (the
        canceller owns that), and the state goes back to ``idle`` if this was
        the latest call.  A synchronous ``mutation_fn`` already running in its
        worker thread is abandoned: it runs to its end there and its result
        is discarded.

        With a ``scope``, the whole call (``on_mutate`` to ``on_settled``)
        waits until every earlier ``mutate`` call of the client with that
        scope has returned; the state is ``pending`` meanwhile.  A call
        cancelled while it waits leaves the queue (the next keeps its place).

        Raises:
            Exception: ``on_mutate``'s error, or ``mutation_fn``'s error after
                its retries.
            ClientClosedError: the client is not open.
        """
        self._owners.check_open()
        self._call_id += 1
        call: _Call[T] = _Call(
            self._call_id,
            MutationState(
                status=MutationStatus.PENDING,
                variables=variables,
                submitted_at=self._clock.wall(),
            ),
        )
        self._set(call.id, call.pending)
        try:
            async with self._runs.run(self.options.scope):
                return await self._run(call, variables)
        except Exception:
            raise  # _run has set the error state
        except BaseException:
            self._set(call.id, _IDLE)  # cancelled (or interrupted): as if never called
            raise

    async def _run(self, call: _Call[T], variables: V) -> T:
        options = self.options
        context: Any = None
        try:
            if options.on_mutate is not None:
                context = await _invoke(options.on_mutate, variables)
            data: T = await self._attempts(call, variables)
        except Exception as error:
            await self._callback("on_error", options.on_error, error, variables, context)
            await self._callback("on_settled", options.on_settled, None, error, variables, context)
            self._set(
                call.id,
                attrs.evolve(
                    call.pending,
                    status=MutationStatus.ERROR,
                    error=error,
                    failure_count=call.failures,
                ),
            )
            raise
        await self._callback("on_success", options.on_success, data, variables, context)
        await self._callback("on_settled", options.on_settled, data, None, variables, context)
        self._set(call.id, attrs.evolve(call.pending, status=MutationStatus.SUCCESS, data=data))
        return data

    async def _attempts(self, call: _Call[T], variables: V) -> Any:
        rule = self.options.retry_rule
        assert rule.should_retry is not None  # retry is never None for a mutation
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            return self._attempt(variables)

        def failed_attempt(failures: int, _error: Exception) -> None:
            call.failures = failures
            self._set(call.id, attrs.evolve(call.pending, failure_count=failures))

        ok, result = await call_with_retries(
            attempt,
            should_retry=rule.should_retry,
            delay=rule.delay or self._default_retry_delay,
            on_failed_attempt=failed_attempt,
        )
        if not ok:
            call.failures = attempts
            assert isinstance(result, Exception)
            raise result
        return result

    async def _attempt(self, variables: V) -> Any:
        fn = self.options.mutation_fn
        if self.options.is_async:
            return await fn(variables)
        result = await trio.to_thread.run_sync(
            _call_in_thread, fn, variables, abandon_on_cancel=True
        )
        if isinstance(result, _Awaitable):  # e.g. ``lambda v: save(v)`` with an async save
            return await result.awaitable
        return result

    async def _callback(self, name: str, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            await _invoke(callback, *args)
        except Exception:
            logger.exception("%s callback of mutation %r raised", name, self.options.mutation_fn)

    def reset(self) -> None:
        """Put the state back to ``idle``; synchronous.

        Calls in flight go on and return their results, but no longer change
        the state.
        """
        self._call_id += 1
        self._set(self._call_id, _IDLE)

    def subscribe(self, listener: MutationListener) -> Callable[[], None]:
        """Call ``listener(state)`` now, then on each change of the state; return ``unsubscribe``.

        Synchronous.  ``unsubscribe`` is idempotent.  A listener that raises
        is logged and stays subscribed; it never stops the mutation or the
        other listeners.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        self._listeners.append(listener)
        self._call(listener, self._state)
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                self._listeners.remove(listener)

        return unsubscribe

    def _set(self, call: int, state: MutationState[T]) -> None:
        if call != self._call_id or state is self._state:
            return
        self._state = state
        for listener in list(self._listeners):
            self._call(listener, state)

    def _call(self, listener: MutationListener, state: MutationState[T]) -> None:
        try:
            listener(state)
        except Exception:
            logger.exception(
                "listener %r of mutation %r raised", listener, self.options.mutation_fn
            )

    def __repr__(self) -> str:
        return f"<Mutation {self._state.status.value} fn={self.options.mutation_fn!r}>"


@attrs.frozen
class _Awaitable:
    """An awaitable made in a worker thread, boxed: trio refuses a thread that returns one."""

    awaitable: Awaitable[Any]


def _call_in_thread(fn: Callable[[Any], Any], variables: Any) -> Any:
    result = fn(variables)
    return _Awaitable(result) if inspect.isawaitable(result) else result


async def _invoke(callback: Callable[..., Any], *args: Any) -> Any:
    result = callback(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


__all__ = ["Mutation", "MutationOptions", "MutationState", "MutationStatus"]
