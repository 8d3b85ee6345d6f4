"""``@cache``: memoize an async or sync function on a query client.

Each call maps to one query of the client: key ``("fn", <module.qualname>,
*parts)`` where the parts come from the key template, ``stale_time=ttl``,
``max_age=ttl + stale`` (past it the caller waits for a new value) and
``gc_time=ttl + stale`` (which is also the L2 entry's TTL).  The client does
the rest: one origin call for concurrent misses, stale-while-revalidate,
retries, L2.

The hot path is the point of this module.  The ``QueryOptions`` of a call
are built once and memoized by the call's arguments, so a fresh hit is: find
the client, one dict lookup of the arguments, one of the key's snapshot, a
flag test.  The wrapper is chosen when decorating: with ``metrics=None`` no
metrics code runs at all.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Coroutine
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

import attrs
import trio

from backends import ops

from ._client import QueryClient
from ._errors import InvalidOptionError, QueryCancelledError
from ._key_template import KeyTemplate, KeyTemplateSpec
from ._keys import QueryKey, canonical_key, prefix_hash
from ._metrics import MetricsCollector
from ._options import QueryOptions
from ._origin import origin_call
from ._run_clients import ClientChoice, ClientResolver
from ._state import Snapshot

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

MEMO_SIZE = 4096
"""Distinct argument tuples whose options a decorated function remembers (oldest dropped first)."""

_namespaces: dict[str, int] = {}


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
    ttl: float,
    *,
    key: KeyTemplateSpec = None,
    stale: float = 0.0,
    store: Any = None,
    metrics: MetricsCollector | None = None,
    client: QueryClient | None = None,
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

    The decorated function keeps its name, docstring and signature and
    gains ``await f.invalidate(*args, **kwargs)`` (remove the entry those
    arguments map to, from L1 and the store) and ``await f.clear()``
    (remove every entry of this function, and only of this function).

    Args:
        ttl: seconds a value stays fresh (``math.inf``: forever).
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

    Raises:
        InvalidOptionError: ``ttl`` or ``stale`` is negative, NaN or not a
            number; both ``store`` and ``client`` are given.
        KeyTemplateError: (when decorating) the key template does not fit
            the function's signature.
        TypeError: (when decorating) the decorated object is not a function
            (or is an async generator function); ``metrics`` is not a
            collector; ``client`` is not a ``QueryClient``.

    A call raises ``TypeError`` for arguments that do not fit the function,
    ``InvalidKeyError`` for arguments that cannot be part of a key (a list,
    an object), and whatever the function raised.
    """
    ttl = _seconds("ttl", ttl)
    stale = _seconds("stale", stale)
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
    choice = ClientChoice(client=client, store=store)

    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func):
            raise TypeError(f"cache() decorates a function, got {type(func).__name__}: {func!r}")
        if inspect.isasyncgenfunction(func):
            raise TypeError(f"cache() cannot decorate an async generator function ({func!r})")
        state: _CachedCalls[Any] = _CachedCalls(
            func=func,
            name=namespace_of(func),
            template=KeyTemplate.for_function(key, func),
            ttl=ttl,
            stale=stale,
            choice=choice,
            metrics=metrics,
        )
        if metrics is not None:
            wrapper = _measured_wrapper(state)
        elif state.static is not None:
            wrapper = _static_wrapper(state, state.static)
        elif state.template.is_callable:
            wrapper = _key_fn_wrapper(state)
        else:
            wrapper = _args_wrapper(state)
        wrapped: Any = functools.wraps(func)(wrapper)
        wrapped.invalidate = state.invalidate
        wrapped.clear = state.clear
        wrapped.cache_name = state.name
        return wrapped

    return decorate


def namespace_of(func: Callable[..., Any]) -> str:
    """Return a namespace for ``func``'s keys: ``module.qualname``, unique in this process.

    A second function with the same qualified name (a function defined
    inside another and decorated on every call) gets ``#2``, ``#3`` ... so
    two decorated functions never share entries.
    """
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    base = f"{module}.{qualname}"
    count = _namespaces.get(base, 0) + 1
    _namespaces[base] = count
    return base if count == 1 else f"{base}#{count}"


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(
            f"cache(): {name} must be a number of seconds, got {type(value).__name__}: {value!r}"
        )
    if math.isnan(value) or value < 0:
        raise InvalidOptionError(f"cache(): {name} must be >= 0 seconds, got {value!r}")
    return float(value)


@attrs.frozen
class _Memo:
    """The options of one call shape."""

    options: QueryOptions[Any]
    exact: str | None
    """``repr`` of the arguments when they hold a 0, 1 or bool: ``f(1)`` and
    ``f(True)`` are equal dict keys but two cache keys, so such a memo is used
    only by a call whose arguments have the same ``repr``."""


def _ambiguous(value: object) -> bool:
    """Whether ``value`` holds a number equal to a bool (or a bool), at any depth."""
    if isinstance(value, tuple):
        return any(_ambiguous(v) for v in value)
    return isinstance(value, int | float) and (value == 0 or value == 1)


@attrs.define(eq=False)
class _CachedCalls(Generic[R]):
    """Everything one decorated function knows: its template, times, client choice, memo."""

    func: Callable[..., Any]
    name: str
    template: KeyTemplate
    ttl: float
    stale: float
    choice: ClientChoice
    metrics: MetricsCollector | None
    stale_time: float = attrs.field(init=False)
    """``ttl``, as the one float object every query of this function carries: the
    client's fresh-hit test compares stale times by identity."""
    resolve: ClientResolver = attrs.field(init=False)
    static: QueryOptions[Any] | None = attrs.field(init=False, default=None)
    """The options of a function without parameters (one key, no memo)."""
    by_args: dict[Any, _Memo] = attrs.field(init=False, factory=dict)
    by_kwargs: dict[Any, _Memo] = attrs.field(init=False, factory=dict)
    by_key: dict[Any, _Memo] = attrs.field(init=False, factory=dict)
    """Memo of a callable key: by its result (it may differ between equal calls)."""
    refresh_started: dict[str, float] = attrs.field(init=False, factory=dict)
    """With metrics: when each key's pending background refresh was started."""

    def __attrs_post_init__(self) -> None:
        self.stale_time = self.ttl
        self.resolve = self.choice.resolver()
        if not self.template.signature.parameters and not self.template.is_callable:
            self.static = self.build_options((), {}, self.template.parts((), {}))

    @property
    def namespace_key(self) -> QueryKey:
        return ("fn", self.name)

    # -- options ------------------------------------------------------------

    def build_options(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], parts: tuple[Any, ...]
    ) -> QueryOptions[Any]:
        """Return new options for a call whose key parts are ``parts``.

        Raises:
            InvalidKeyError: a part cannot be part of a key.
        """
        query_key, key_hash = canonical_key((*self.namespace_key, *parts))
        lifetime = self.ttl + self.stale
        return QueryOptions(
            query_key=query_key,
            query_fn=origin_call(self.func, args, kwargs, name=self.name, metrics=self.metrics),
            stale_time=self.stale_time,
            gc_time=lifetime,
            max_age=None if lifetime == math.inf else lifetime,
            on_settled=None if self.metrics is None else functools.partial(self._settled, key_hash),
        )

    def options_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> QueryOptions[Any]:
        """Return the options of a call, from the memo or built (and memoized) now.

        Raises:
            TypeError: the arguments do not fit the function.
            InvalidKeyError: an argument cannot be part of a key.
        """
        if self.static is not None:
            if args or kwargs:
                self.template.signature.bind(*args, **kwargs)  # raises the TypeError
            return self.static
        if self.template.is_callable:
            return self._options_by_key(args, kwargs)
        memo, shape = self.by_args, args
        if kwargs:
            memo, shape = self.by_kwargs, (args, tuple(kwargs.items()))
        try:
            found = memo.get(shape)
        except TypeError:  # an unhashable argument: build_options says if it is a valid key
            found, memo = None, {}
        if found is not None and (found.exact is None or found.exact == repr(shape)):
            return found.options
        options = self.build_options(args, kwargs, self.template.parts(args, kwargs))
        _remember(memo, shape, _Memo(options, repr(shape) if _ambiguous(shape) else None))
        return options

    def _options_by_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> QueryOptions[Any]:
        return self.options_for_key(args, kwargs, self.template.parts(args, kwargs)[0])

    def options_for_key(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any
    ) -> QueryOptions[Any]:
        """Return new options for a call whose callable key returned ``key``, memoized by it.

        Built again on every call that is not a fresh hit: the options carry
        the call's arguments, and equal keys may come from different arguments.
        """
        options = self.build_options(args, kwargs, (key,))
        with contextlib.suppress(TypeError):  # unhashable: build_options refused it already
            _remember(self.by_key, key, _Memo(options, _exact(key)))
        return options

    def memo_for_key(self, key: Any) -> QueryOptions[Any] | None:
        """Return the options memoized for a callable key's result ``key``, if any."""
        try:
            found = self.by_key.get(key)
        except TypeError:
            return None
        if found is None or (found.exact is not None and found.exact != repr(key)):
            return None
        return found.options

    # -- calls ----------------------------------------------------------------

    async def call(
        self, client: QueryClient | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Everything but a fresh hit found by the wrapper."""
        options = self.options_for(args, kwargs)
        if client is None:
            client = await self.choice.open()
        return await _fetch(client, options)

    async def call_with_key(
        self, client: QueryClient | None, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any
    ) -> Any:
        """Everything but a fresh hit, for a callable key that returned ``key``."""
        options = self.options_for_key(args, kwargs, key)
        if client is None:
            client = await self.choice.open()
        return await _fetch(client, options)

    async def call_measured(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call with metrics: every outcome recorded."""
        metrics = self.metrics
        assert metrics is not None
        name = self.name
        start = trio.current_time()
        try:
            client = self.resolve()
            if client is None:
                client = await self.choice.open()
            options = self.options_for(args, kwargs)
            snap = client._table.get(options.key_hash)
            if snap is not None and snap.fresh and snap.stale_time is options.stale_time:
                metrics.record_hit(name)
                return snap.state.data
            self._record_read(client, snap, options)
            return await _fetch(client, options)
        finally:
            metrics.record_latency(name, "get", trio.current_time() - start)

    def _record_read(
        self, client: QueryClient, snap: Snapshot | None, options: QueryOptions[Any]
    ) -> None:
        metrics = self.metrics
        assert metrics is not None
        if snap is not None and snap.state.has_data and not client._too_old(snap, options):
            metrics.record_stale_hit(self.name)
            self.refresh_started.setdefault(options.key_hash, trio.current_time())
            return
        metrics.record_miss(self.name)
        registry = client._registry
        actor = registry.get(options.key_hash) if registry is not None else None
        if actor is not None and actor.is_fetching:
            metrics.record_dedup_join(self.name)

    def _settled(self, key_hash: str, _data: Any, error: BaseException | None) -> None:
        started = self.refresh_started.pop(key_hash, None)
        if started is not None and self.metrics is not None:
            duration = trio.current_time() - started
            self.metrics.record_background_refresh(self.name, error is None, duration)

    # -- invalidate / clear ---------------------------------------------------------

    async def invalidate(self, *args: Any, **kwargs: Any) -> None:
        """Remove the entry these arguments map to, from L1 and from the store.

        A call waiting on that entry's fetch in flight starts a new fetch.
        Returns once the store's delete landed, or after the client's
        ``l2_timeout`` (the delete is retried in the background then).

        Raises:
            TypeError: the arguments do not fit the function.
            InvalidKeyError: an argument cannot be part of a key.
        """
        options = self.options_for(args, kwargs)
        client = await self.choice.open()
        await client.remove_queries(options.query_key, exact=True)
        l2 = client._l2
        if l2 is not None:
            l2.delete_soon(options.key_hash)
            await _l2_settled(client)
        if self.metrics is not None:
            self.metrics.record_delete(self.name)

    async def clear(self) -> None:
        """Remove every entry of this function (and no other's), from L1 and from the store.

        Raises:
            StorageUnsupportedError: the store has no ``delete_prefix``.
            StorageError: the store failed (L1 is cleared already).
        """
        client = await self.choice.open()
        await client.remove_queries(self.namespace_key)
        self.by_args.clear()
        self.by_kwargs.clear()
        self.by_key.clear()
        l2 = client._l2
        if l2 is not None:
            await _l2_settled(client)  # the deletes remove_queries queued go first
            # `,` ends the namespace: ("fn", "m.f") must not match ("fn", "m.f2").
            prefix = l2.key_prefix + prefix_hash(self.namespace_key) + ","
            await ops.delete_prefix(l2.store, prefix)
        if self.metrics is not None:
            self.metrics.record_delete(self.name)


def _remember(memo: dict[Any, _Memo], shape: Any, entry: _Memo) -> None:
    if len(memo) >= MEMO_SIZE:
        del memo[next(iter(memo))]
    memo[shape] = entry


def _exact(key: Any) -> str | None:
    return repr(key) if _ambiguous(key) else None


async def _fetch(client: QueryClient, options: QueryOptions[Any]) -> Any:
    try:
        return await client.fetch_query(options)
    except QueryCancelledError:
        # invalidate() or clear() removed the key while this call waited on
        # its fetch: the caller wants a value fetched after that, so fetch again.
        return await client.fetch_query(options)


async def _l2_settled(client: QueryClient) -> None:
    """Wait (up to ``l2_timeout``) until the client's queued L2 writes and deletes landed."""
    l2 = client._l2
    assert l2 is not None
    with trio.move_on_after(client.config.l2_timeout):
        await l2._drained.wait()


# -- the wrappers: one per kind of key, picked when decorating ---------------------


def _args_wrapper(state: _CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    resolve = state.resolve
    by_args = state.by_args
    by_kwargs = state.by_kwargs
    slow = state.call

    async def cached(*args: Any, **kwargs: Any) -> Any:
        client = resolve()
        if client is not None:
            try:
                memo = by_kwargs.get((args, tuple(kwargs.items()))) if kwargs else by_args.get(args)
            except TypeError:
                memo = None
            if memo is not None and memo.exact is None:
                options = memo.options
                snap = client._table.get(options.key_hash)
                if snap is not None and snap.fresh and snap.stale_time is options.stale_time:
                    return snap.state.data
        return await slow(client, args, kwargs)

    return cached


def _static_wrapper(
    state: _CachedCalls[Any], options: QueryOptions[Any]
) -> Callable[..., Coroutine[Any, Any, Any]]:
    resolve = state.resolve
    slow = state.call
    key_hash = options.key_hash
    stale_time = options.stale_time

    async def cached(*args: Any, **kwargs: Any) -> Any:
        client = resolve()
        if client is not None and not args and not kwargs:
            snap = client._table.get(key_hash)
            if snap is not None and snap.fresh and snap.stale_time is stale_time:
                return snap.state.data
        return await slow(client, args, kwargs)

    return cached


def _key_fn_wrapper(state: _CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    resolve = state.resolve
    key_fn = state.template.key_fn
    assert key_fn is not None
    memo_for_key = state.memo_for_key
    slow = state.call_with_key

    async def cached(*args: Any, **kwargs: Any) -> Any:
        client = resolve()
        key = key_fn(*args, **kwargs)
        if client is not None:
            options = memo_for_key(key)
            if options is not None:
                snap = client._table.get(options.key_hash)
                if snap is not None and snap.fresh and snap.stale_time is options.stale_time:
                    return snap.state.data
        return await slow(client, args, kwargs, key)

    return cached


def _measured_wrapper(state: _CachedCalls[Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    measured = state.call_measured

    async def cached(*args: Any, **kwargs: Any) -> Any:
        return await measured(args, kwargs)

    return cached
