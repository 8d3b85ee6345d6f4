"""``@cache.batch``: a batch loader (DataLoader) on a query client.

The decorated function takes a list of ids and returns a mapping id → value.
Callers ask for one id (``await f(42)``) or several (``await f.many(ids)``);
each id is its own query, keyed ``("fn", <module.qualname>, <template>, id)``
with ``@cache``'s times, so fresh and stale hits, single flight, L2,
invalidation and inspection work per id.  The ids that must come from the
origin in one run-loop batch go out together (``_batch_window``).

The hot path is ``@cache``'s: a fresh hit of ``f(id)`` is a lookup of the
client, of the id's memoized options and of its snapshot, and a flag test.
"""

from __future__ import annotations

import functools
import inspect
import math
import string
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from .._client import QueryClient
from .._errors import InvalidOptionError
from .._option_checks import is_async_callable
from ..metrics._collector import MetricsCollector
from ._batch_calls import BatchCalls, one_wrapper
from ._batch_window import (
    BatchOrigin,
    BatchStatistics,
    Missing,
    MissingIdError,
)
from ._cache import cache as cache_function
from ._cached_calls import namespace_of
from ._key_template import KeyTemplateError
from ._run_clients import ClientChoice

K = TypeVar("K")
V = TypeVar("V")
K_contra = TypeVar("K_contra", contravariant=True)
P = ParamSpec("P")
R = TypeVar("R")

_MISSING_MODES = ("none", "error", "skip")


class BatchedFunction(Protocol[K_contra, V]):
    """A function decorated with :func:`batch`: one id, many ids, ``invalidate``, ``clear``."""

    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str
    cache_name: str
    """The namespace of the function's keys (``module.qualname``) and its metrics name."""

    def __call__(self, item_id: K_contra, /) -> Coroutine[Any, Any, V | None]: ...

    async def many(self, ids: Iterable[K_contra], /) -> list[V | None]:
        """Return the values of ``ids``, in order (see :func:`batch`)."""

    async def invalidate(self, item_id: K_contra, /) -> None:
        """Remove the id's entry, from L1 and the store."""

    async def clear(self) -> None:
        """Remove every entry of this function, from L1 and the store."""

    def statistics(self) -> BatchStatistics:
        """Return what the origin did: calls, ids, missing and unrequested ids."""


class BatchDecorator(Protocol):
    """What :func:`batch` returns: applied to an ``async def`` taking a list of ids."""

    def __call__(
        self, func: Callable[[list[K]], Coroutine[Any, Any, Mapping[K, V]]]
    ) -> BatchedFunction[K, V]: ...


def batch(
    ttl: float,
    *,
    key: str | None = None,
    stale: float = 0.0,
    max_batch: int = 100,
    missing: Missing = "none",
    store: Any = None,
    metrics: MetricsCollector | None = None,
    client: QueryClient | None = None,
) -> BatchDecorator:
    """Cache a batch loader: an ``async def`` taking a list of ids, returning a mapping id → value.

    ``await f(42)`` returns one id's value, ``await f.many([1, 2, 3])`` a
    list of values in the order asked.  Each id is cached on its own, as
    ``@cache`` caches a call: fresh for ``ttl`` seconds, then served stale
    for ``stale`` seconds while one refresh runs, then waited for.  The ids
    that must be fetched and whose fetches start in the same run-loop batch
    of trio (concurrent callers started together, the ids of one ``many``)
    go to the function in one call, ``max_batch`` ids at most per call (more
    are split into concurrent calls).  An id being fetched is joined, never
    asked for twice.  With a store, the cold ids are read from it first, in
    one ``get_many``, and only the ids it does not hold fresh go to the function.

    The function is called with a new list of distinct ids each time.  Ids in
    its mapping that were not asked for are ignored and counted
    (:meth:`BatchedFunction.statistics`), never cached.  An id it leaves out
    is, per ``missing``: ``"none"`` cached as ``None``; ``"error"``
    :class:`MissingIdError` for that id's callers (not cached); ``"skip"``
    not cached, and its callers get ``None`` (the next call asks again).

    If the function raises, every id of that call gets the error, after the
    client's ``retry`` attempts (retried per call, not per id); stale values
    stay served.  A caller cancelled while waiting stops waiting; the call
    goes on for the other ids and callers, and its values land in the cache.

    The decorated function gains ``many``, ``invalidate(id)``, ``clear()``
    and ``statistics()``; the client is chosen as for ``@cache``.

    Args:
        ttl: seconds a value stays fresh (``math.inf``: forever).
        key: ``None`` keys each id by itself; a template with exactly one
            placeholder, ``"user:{}"`` or ``"user:{user_id}"``, names it (the
            key holds the id's value, not its text).
        stale: seconds after ``ttl`` during which the old value is served
            while it is refreshed.
        max_batch: most ids per call of the function (>= 1).
        missing: ``"none"``, ``"error"`` or ``"skip"`` (see above).
        store: an L2 byte store: the function runs on the trio run's client
            for that store.
        metrics: a :class:`MetricsCollector` told of hits, stale hits and
            misses per id, and of each call of the function (a fetch, its
            latency, its error).
        client: the client to run on; by default the innermost client open
            in the calling context, else the run's default client.

    Raises:
        InvalidOptionError: ``ttl`` or ``stale`` is negative, NaN or not a
            number; ``max_batch`` is not an int >= 1; ``missing`` is not one
            of ``"none"``, ``"error"``, ``"skip"``; both ``store`` and
            ``client`` are given.
        KeyTemplateError: ``key`` has no placeholder, more than one, a
            conversion, a format spec or an attribute/index lookup.
        TypeError: ``key`` is not a string; (when decorating) the function is
            not an ``async def`` (wrap a sync loader in
            ``trio.to_thread.run_sync``) or cannot take one positional
            argument; ``metrics`` or ``client`` has the wrong type.

    A call raises ``InvalidKeyError`` for an id that cannot be part of a key
    (a list, an object), ``MissingIdError`` (``missing="error"``), and the
    function's error.  ``many`` waits for every id, then raises the first
    error in the order asked.
    """
    ttl = _seconds("ttl", ttl)
    stale = _seconds("stale", stale)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InvalidOptionError(f"cache.batch(): max_batch must be an int >= 1, got {max_batch!r}")
    if missing not in _MISSING_MODES:
        raise InvalidOptionError(
            f"cache.batch(): missing must be 'none', 'error' or 'skip', got {missing!r}"
        )
    template = _template(key)
    if client is not None and not isinstance(client, QueryClient):
        raise TypeError(f"cache.batch(): client must be a QueryClient, got {type(client).__name__}")
    if client is not None and store is not None:
        raise InvalidOptionError(
            "cache.batch(): give client= or store=, not both (a client has its own storage)"
        )
    if metrics is not None and not isinstance(metrics, MetricsCollector):
        raise TypeError(
            f"cache.batch(): metrics must be a MetricsCollector, got {type(metrics).__name__}"
        )
    choice = ClientChoice(client=client, store=store)

    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func) or not is_async_callable(func):
            raise TypeError(
                "cache.batch() decorates an async def taking a list of ids, got "
                f"{func!r}; wrap a sync loader: `await trio.to_thread.run_sync(load, ids)`"
            )
        try:
            inspect.signature(func).bind([])
        except TypeError as exc:
            raise TypeError(
                f"cache.batch(): {func!r} cannot be called with a list of ids: {exc}"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): trust it
            pass
        name = namespace_of(func)
        origin = BatchOrigin(
            func=func, name=name, max_batch=max_batch, missing=missing, metrics=metrics
        )
        calls = BatchCalls(origin, template, ttl=ttl, stale=stale, choice=choice)
        wrapper = one_wrapper(calls)
        # It takes one id, not the decorated function's list (``__wrapped__`` is that).
        signature = inspect.signature(wrapper)
        wrapped: Any = functools.wraps(func)(wrapper)
        wrapped.__signature__ = signature
        wrapped.many = calls.many
        wrapped.invalidate = calls.invalidate
        wrapped.clear = calls.clear
        wrapped.statistics = origin.statistics
        wrapped.cache_name = name
        return wrapped

    return decorate


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(
            f"cache.batch(): {name} must be a number of seconds, "
            f"got {type(value).__name__}: {value!r}"
        )
    if math.isnan(value) or value < 0:
        raise InvalidOptionError(f"cache.batch(): {name} must be >= 0 seconds, got {value!r}")
    return float(value)


def _template(key: object) -> str | None:
    """Check a batch key template: exactly one placeholder, ``{}``, ``{0}`` or ``{name}``.

    Raises:
        TypeError: ``key`` is neither a string nor ``None``.
        KeyTemplateError: the template does not have exactly one plain placeholder.
    """
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(
            f"cache.batch(): key must be a template string or None, got {type(key).__name__}"
        )
    try:
        fields = [
            (field, spec, conversion)
            for _literal, field, spec, conversion in string.Formatter().parse(key)
            if field is not None
        ]
    except ValueError as exc:
        raise KeyTemplateError(f"cache.batch(): key template {key!r} is malformed: {exc}") from None
    if len(fields) != 1:
        raise KeyTemplateError(
            f"cache.batch(): key template {key!r} must have exactly one placeholder for the id "
            f"('{{}}' or '{{name}}'), it has {len(fields)}"
        )
    ((field, spec, conversion),) = fields
    if spec or conversion or not (field in ("", "0") or field.isidentifier()):
        raise KeyTemplateError(
            f"cache.batch(): key template {key!r}: the placeholder must be '{{}}' or '{{name}}' "
            "(no conversion, format spec or lookup: the key holds the id's value)"
        )
    return key


class CacheFamily(Generic[P, R]):
    """``sq.cache``: the ``@cache`` decorator, with ``@cache.batch`` beside it."""

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(self, cache: Callable[P, R]) -> None:
        self._cache = cache
        functools.update_wrapper(self, cache)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._cache(*args, **kwargs)

    batch = staticmethod(batch)

    def __repr__(self) -> str:
        return f"<stackquery.cache decorator (and cache.batch) wrapping {self._cache!r}>"


cache = CacheFamily(cache_function)
"""``@cache(ttl, key=, stale=, ...)``, and ``@cache.batch(ttl, key=, max_batch=, missing=)``."""

__all__ = [
    "BatchDecorator",
    "BatchStatistics",
    "BatchedFunction",
    "CacheFamily",
    "MissingIdError",
    "batch",
    "cache",
]
