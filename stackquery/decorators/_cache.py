"""``@cache``: memoize an async or sync function on a query client.

Each call maps to one query of the client: key ``("fn", <module.qualname>,
*parts)`` where the parts come from the key template, ``stale_time=ttl``
(a number or ``ttl(value)``), ``max_stale=stale`` (past it the caller waits
for a new value) and ``gc_time=ttl + stale + stale_if_error`` (which is also
the L2 entry's TTL; the client's for a ``ttl`` function, raised to cover what
it computes + ``stale`` + ``stale_if_error``).  The client does
the rest: one origin call for concurrent misses, stale-while-revalidate,
retries, L2.

The hot path is the point of this module.  The key hash of a call is
computed once and memoized by the call's arguments, so a fresh hit is: find
the client, one dict lookup of the arguments, one of the key's snapshot, a
flag test.  The wrapper is chosen when decorating: with ``metrics=None`` no
metrics code runs at all; a function with plain parameters gets one made
with those parameters (``_exact_wrapper.py``), the others the generic
``*args, **kwargs`` wrappers below.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from .._circuit import CircuitBreaker
from .._client import QueryClient
from .._errors import InvalidOptionError
from .._options import QueryOptions
from .._retry_policy import RetryPolicy, accepts
from ..metrics._collector import MetricsCollector
from ._cached_calls import ONE_KEYWORD, ONE_POSITIONAL, CachedCalls, TypedMemo, namespace_of
from ._exact_wrapper import exact_wrapper
from ._guards import checked_guards
from ._key_template import KeyTemplate, KeyTemplateSpec
from ._origin_protection import OriginProtection
from ._run_clients import ClientChoice

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class CachedFunction(Protocol[P, R_co]):
    """A function decorated with :func:`cache`: awaited calls, ``invalidate`` and ``clear``."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str
    cache_name: str
    """The namespace of the function's keys (``module.qualname``) and its metrics name."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Remove the entry these arguments map to, from L1 and the store."""

    async def clear(self) -> None:
        """Remove every entry of this function, from L1 and the store."""


class CacheDecorator(Protocol):
    """What :func:`cache` returns: applied to an async or a sync function."""

    @overload
    def __call__(self, func: Callable[P, Coroutine[Any, Any, R]]) -> CachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> CachedFunction[P, R]: ...


def cache(
    ttl: float | Callable[[Any], float],
    *,
    key: KeyTemplateSpec = None,
    stale: float = 0.0,
    store: Any = None,
    metrics: MetricsCollector | None = None,
    client: QueryClient | None = None,
    stale_if_error: float = 0.0,
    circuit: CircuitBreaker | None = None,
    retry: RetryPolicy | None = None,
    jitter: float | None = None,
    cache_if: Callable[[Any], object] | None = None,
    error_ttl: float | None = None,
) -> CacheDecorator:
    """Cache an ``async def`` or plain ``def`` function's results on a query client.

    A value is fresh for ``ttl`` seconds after it was fetched; from ``ttl``
    to ``ttl + stale`` it is returned at once while one refresh runs in the
    background; after that the caller waits for a new value.  Concurrent
    callers of a key that must wait share one call of the function; a
    caller cancelled while waiting stops waiting and the call goes on for
    the others.  ``None`` is a value like any other and is cached.  A plain
    ``def`` runs in a worker thread; the decorated function is awaited either
    way.  Errors of the function are retried per the client's ``retry``,
    then raised to the callers that wait (stale data stays served).

    On a method, give a template or a callable key that leaves out
    ``self`` (an object cannot be part of a key).

    The decorated function keeps its name, docstring and signature and
    gains ``await f.invalidate(*args, **kwargs)`` (remove the entry those
    arguments map to, from L1 and the store) and ``await f.clear()``
    (remove every entry of this function, and only of this function).

    Args:
        ttl: seconds a value stays fresh (``math.inf``: forever), or
            ``ttl(value) -> float`` computed when a value lands (one that raises
            or returns no number of seconds >= 0 is logged and counted; that
            value is then stale at once).
        key: ``None`` (the default) keys on every argument, after defaults;
            a template: ``"flags"`` (one key), ``"user:{}"`` (positional
            parameters in order), ``"order:{user_id}:{order_id}"``
            (parameters by name, however they were passed); or a callable
            given the call's arguments and returning the key.
        stale: seconds after ``ttl`` during which the old value is served
            while it is refreshed (``math.inf``: always serve the old value).
        store: an L2 byte store (``backends.StorageBackend``).  The function
            then runs on the trio run's client for that store, so its
            values survive the process and are shared with every process
            using the store.
        metrics: a :class:`MetricsCollector` told of hits, stale hits,
            misses, dedup joins, fetches, fetch errors, latencies
            (``"get"``, ``"fetch"``) and background refreshes, under the
            name :attr:`CachedFunction.cache_name`.
        client: the client to run on; by default the innermost client open
            in the calling context, else a client that lives for the rest of
            the ``trio.run``.
        stale_if_error: seconds past the moment the value stops being served
            (``stale`` seconds after it went stale, its fresh period as
            computed and jittered) during which a caller that waits for a new
            value gets the last one when the function fails (the value is
            kept that much longer, in L1 and in the store); counted as
            ``stale_if_error`` in ``metrics``.  The decorator's own: the
            client's is not used.
        circuit: a :class:`CircuitBreaker` each call of the function goes
            through (shared with whatever else uses it): while it is open
            the function is not called, stale values are still served and
            a caller with nothing to serve gets :class:`CircuitOpenError`.
        retry: retries after a failed call (an int), or ``retry(failure_count,
            error) -> bool``; ``None``: the client's.
        jitter: spread of each value's fresh period, a fraction in [0, 1):
            ``0.1`` makes it ``ttl`` ±10%; ``None``: the client's.
        cache_if: ``cache_if(value)``: a value it is false for is returned to
            the callers that waited for it but not cached (neither in L1 nor
            in the store): the next call calls the function again.
        error_ttl: seconds a failed call's error is remembered: calls in that
            window get it without calling the function (or get the stale
            value while it may be served); ``invalidate`` forgets it.

    Raises:
        InvalidOptionError: ``ttl``, ``stale``, ``stale_if_error`` or
            ``error_ttl`` is negative,
            NaN or not a number (``error_ttl`` also 0); ``jitter`` is outside
            [0, 1); ``retry`` is neither an int >= 0 nor callable; both
            ``store`` and ``client`` are given.
        KeyTemplateError: (when decorating) the key template does not fit
            the function's signature.
        TypeError: (when decorating) the decorated object is not a function
            (or is an async generator function); ``metrics`` is not a
            collector; ``client`` is not a ``QueryClient``; ``circuit`` is not
            a ``CircuitBreaker``; a ``ttl``, ``retry`` or ``cache_if`` function
            of the wrong shape.

    A call raises ``TypeError`` for arguments that do not fit the function,
    ``InvalidKeyError`` for arguments that cannot be part of a key (a list,
    an object), and whatever the function raised.
    """
    ttl = _ttl(ttl)
    stale = _seconds("stale", stale)
    origin = OriginProtection.checked("cache", retry, jitter, cache_if, error_ttl)
    if client is not None and not isinstance(client, QueryClient):
        raise TypeError(f"cache(): client must be a QueryClient, got {type(client).__name__}")
    if client is not None and store is not None:
        raise InvalidOptionError(
            "cache(): give client= or store=, not both (a client has its own storage)"
        )
    if metrics is not None and not isinstance(metrics, MetricsCollector):
        raise TypeError(
            f"cache(): metrics must be a MetricsCollector, got {type(metrics).__name__}"
        )
    guard_window, guard_circuit = checked_guards("cache", stale_if_error, circuit)
    choice = ClientChoice(client=client, store=store)

    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func):
            raise TypeError(f"cache() decorates a function, got {type(func).__name__}: {func!r}")
        if inspect.isasyncgenfunction(func):
            raise TypeError(f"cache() cannot decorate an async generator function ({func!r})")
        state: CachedCalls[Any] = CachedCalls(
            func=func,
            name=namespace_of(func),
            template=KeyTemplate.for_function(key, func),
            ttl=ttl,
            stale=stale,
            choice=choice,
            metrics=metrics,
            stale_if_error=guard_window,
            circuit=guard_circuit,
            origin=origin,
        )
        if metrics is not None:
            wrapper = _measured_wrapper(state)
        elif state.static is not None:
            wrapper = exact_wrapper(state) or _static_wrapper(state, state.static)
        elif state.template.is_callable:
            wrapper = _key_fn_wrapper(state)
        else:
            wrapper = exact_wrapper(state) or _args_wrapper(state)
        wrapped: Any = functools.wraps(func)(wrapper)
        wrapped.invalidate = state.invalidate
        wrapped.clear = state.clear
        wrapped.cache_name = state.name
        return wrapped

    return decorate


def _ttl(value: Any) -> float | Callable[[Any], float]:
    if callable(value):
        if accepts(value, 1) is False:
            raise TypeError(
                f"cache(): ttl must be a number of seconds or a function ttl(value), "
                f"got {type(value).__name__}: {value!r:.100} which does not take 1 argument"
            )
        return value  # type: ignore[no-any-return]
    return _seconds("ttl", value)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(
            f"cache(): {name} must be a number of seconds, got {type(value).__name__}: {value!r}"
        )
    if math.isnan(value) or value < 0:
        raise InvalidOptionError(f"cache(): {name} must be >= 0 seconds, got {value!r}")
    return float(value)


# -- the wrappers: one per kind of key, picked when decorating ---------------------
#
# Each repeats the fresh-hit test of QueryClient.fetch_query inline (one
# coroutine instead of two) but skips its last-hit timestamp: a decorated
# key's gc_time is ttl + stale, counted from its fetch, when its data can no
# longer be served anyway, so a hit need not push its collection back (the
# clock read would cost half the hit).  Only max_queries' second chance for
# recently hit keys does not see these hits.


def _args_wrapper(state: CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    by_args = state.by_args
    by_kwargs = state.by_kwargs
    by_keywords = state.by_keywords
    stale_time = state.stale_time
    slow = state.call
    fixed = state.choice.client
    if fixed is not None:
        get = fixed.snapshots.get

        async def on_fixed_client(*args: Any, **kwargs: Any) -> Any:
            # As below, with the client's snapshot lookup bound once.
            try:
                if kwargs:
                    memo = (
                        by_kwargs.get((args, tuple(kwargs.items())))
                        if args
                        else by_keywords.get(tuple(kwargs.items()))
                    )
                    if memo.__class__ is TypedMemo:
                        memo = (
                            memo.key_hash
                            if _kind_fits(memo, args, kwargs)
                            else memo.key_hash_for(args, kwargs)
                        )
                else:
                    memo = by_args.get(args)
                    if memo.__class__ is TypedMemo:
                        memo = (
                            memo.key_hash
                            if memo.kind == ONE_POSITIONAL and type(args[memo.at]) is memo.cls
                            else memo.key_hash_for(args, kwargs)
                        )
            except TypeError:  # an unhashable argument: the slow path says what is wrong
                memo = None
            if memo is not None:
                snap = get(memo)  # type: ignore[arg-type]  # a key hash by now
                if snap is not None and snap.fresh_for is stale_time:
                    return snap.data
            return await slow(fixed, args, kwargs)

        return on_fixed_client
    lookups = state.choice.lookups()
    first, last = lookups.first, lookups.last

    async def cached(*args: Any, **kwargs: Any) -> Any:
        client = first()
        if client is None:
            client = last()
        if client is not None:
            # The memo of arguments holding a 0, 1 or bool says where (f(1)
            # and f(True) are one dict key): one such argument is tested
            # inline; several, or one inside a tuple, by key_hash_for().
            try:
                if kwargs:
                    memo = (
                        by_kwargs.get((args, tuple(kwargs.items())))
                        if args
                        else by_keywords.get(tuple(kwargs.items()))
                    )
                    if memo.__class__ is TypedMemo:
                        memo = (
                            memo.key_hash
                            if _kind_fits(memo, args, kwargs)
                            else memo.key_hash_for(args, kwargs)
                        )
                else:
                    memo = by_args.get(args)
                    if memo.__class__ is TypedMemo:
                        memo = (
                            memo.key_hash
                            if memo.kind == ONE_POSITIONAL and type(args[memo.at]) is memo.cls
                            else memo.key_hash_for(args, kwargs)
                        )
            except TypeError:  # an unhashable argument: the slow path says what is wrong
                memo = None
            if memo is not None:
                snap = client.snapshots.get(memo)  # type: ignore[arg-type]  # as above
                if snap is not None and snap.fresh_for is stale_time:
                    return snap.data
        return await slow(client, args, kwargs)

    return cached


def _kind_fits(memo: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a keyword call's one ambiguous argument has the memo's type (else: key_hash_for)."""
    if memo.kind == ONE_KEYWORD:
        return type(kwargs[memo.at]) is memo.cls
    return memo.kind == ONE_POSITIONAL and type(args[memo.at]) is memo.cls


def _static_wrapper(
    state: CachedCalls[Any], options: QueryOptions[Any]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    slow = state.call
    key_hash = options.key_hash
    stale_time = options.stale_time
    fixed = state.choice.client
    if fixed is not None:
        get = fixed.snapshots.get

        async def on_fixed_client(*args: Any, **kwargs: Any) -> Any:
            if not args and not kwargs:
                snap = get(key_hash)
                if snap is not None and snap.fresh_for is stale_time:
                    return snap.data
            return await slow(fixed, args, kwargs)

        return on_fixed_client
    lookups = state.choice.lookups()
    first, last = lookups.first, lookups.last

    async def cached(*args: Any, **kwargs: Any) -> Any:
        client = first()
        if client is None:
            client = last()
        if client is not None and not args and not kwargs:
            snap = client.snapshots.get(key_hash)
            if snap is not None and snap.fresh_for is stale_time:
                return snap.data
        return await slow(client, args, kwargs)

    return cached


def _key_fn_wrapper(state: CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    resolve = state.resolve
    key_fn = state.template.key_fn
    assert key_fn is not None
    memo_for_key = state.memo_for_key
    slow = state.call_with_key
    stale_time = state.stale_time

    async def cached(*args: Any, **kwargs: Any) -> Any:
        client = resolve()
        key = key_fn(*args, **kwargs)
        if client is not None:
            key_hash = memo_for_key(key)
            if key_hash is not None:
                snap = client.snapshots.get(key_hash)
                if snap is not None and snap.fresh_for is stale_time:
                    return snap.data
        return await slow(client, args, kwargs, key)

    return cached


def _measured_wrapper(state: CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    measured = state.call_measured

    async def cached(*args: Any, **kwargs: Any) -> Any:
        return await measured(args, kwargs)

    return cached
