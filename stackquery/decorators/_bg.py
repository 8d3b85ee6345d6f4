"""``@bg``: a value refreshed in the background; ``bg.write`` / ``bg.read`` across processes.

A ``@bg`` function is one query of a client, key ``("bg", key)``, never stale
by itself (``stale_time=inf``): a call returns the latest value at once.  A
refresh loop, a task in the client's nursery, refetches it every
``interval`` through the client (so a refresh and a first call share one
origin call, and failures are retried with the client's backoff).  A failed
refresh keeps the last value; the loop goes on.

``bg.write`` is ``@bg`` on the trio run's client for a shared store: each
refresh lands in the store (and, on Redis, is announced to the other
processes).  ``bg.read`` is the other side: a ``@bg`` whose "origin" reads
the writer's entry from the store, so the request path only ever reads the
local copy; on Redis it also reads the entry again as soon as the writer's
client announces it, with the poll as the fallback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar, cast, final, overload

from .._client import QueryClient
from .._errors import InvalidOptionError
from .._options import QueryClientConfig
from .._retry_policy import RetryPolicy
from ..metrics._collector import MetricsCollector
from ..serializers import as_serializer
from ..serializers import json as json_serializer
from ._bg_function import Background, BackgroundFunction, BgConfig, ErrorHandler
from ._bg_reader import StoreRead

R = TypeVar("R")


class BackgroundDecorator(Protocol):
    """What ``bg(...)`` and ``bg.write(...)`` return: applied to a no-argument function.

    The decorated function keeps its return type: ``await f()`` is typed as
    what the function returns (awaited, for an ``async def``).
    """

    @overload
    def __call__(self, func: Callable[[], Coroutine[Any, Any, R]]) -> BackgroundFunction[R]: ...
    @overload
    def __call__(self, func: Callable[[], R]) -> BackgroundFunction[R]: ...


@final
class BgDecorator:
    """The ``bg`` decorator: ``@bg(interval, key=...)``, ``@bg.write(...)``, ``bg.read(...)``."""

    def __call__(
        self,
        interval: float,
        *,
        key: str,
        ttl: float | None = None,
        store: Any = None,
        metrics: MetricsCollector | None = None,
        on_error: ErrorHandler | None = None,
        run_immediately: bool = True,
        client: QueryClient | None = None,
        retry: RetryPolicy | None = None,
        jitter: float | None = None,
    ) -> BackgroundDecorator:
        """Keep a no-argument function's value fresh by calling it every ``interval`` seconds.

        The refresh loop runs in the client's nursery, from the function's
        first call (or :meth:`BackgroundFunction.start`) until the client
        closes.  The first call waits for the first value; every later call
        returns the latest value at once (a dict lookup: no checkpoint).  A
        refresh that fails (after the client's retries) keeps the last
        value, calls ``on_error(error)`` (an ``on_error`` that raises is
        logged) and the loop goes on.  A plain ``def`` runs in a worker thread.

        Args:
            interval: seconds between refreshes (> 0).
            key: the value's name; one function per key in a client.
            ttl: seconds a value may be served after it was fetched (then a
                call waits for a new one); ``None``: the last value is served
                however old.  With ``store``, also the entry's TTL there.
            store: an L2 byte store: the function runs on the trio run's
                client for that store, so the value is written there.
            metrics: told of hits, stale hits (the last value after a failed
                refresh), misses, fetches, errors and background refreshes,
                under the name ``"bg:" + key``.
            on_error: called with the error of each failed refresh.
            run_immediately: ``False``: the loop's first refresh comes one
                ``interval`` after it starts (a call before that loads the
                value itself).
            client: the client to run on (default: the context's, else the
                run's default client).
            retry: retries after a failed refresh (an int), or
                ``retry(failure_count, error) -> bool``; ``None``: the client's.
            jitter: spread of each pause between refreshes, a fraction in
                [0, 1): ``0.1`` makes it ``interval`` ±10%; ``None``: the client's.

        Raises:
            InvalidOptionError: ``interval`` is not > 0, ``ttl`` is negative,
                ``key`` is empty, ``jitter`` is outside [0, 1), ``retry`` is
                neither an int >= 0 nor callable, or both ``store`` and
                ``client`` are given.
            TypeError: ``key`` is not a ``str``; the decorated object takes
                arguments or is not callable; ``on_error`` is not callable; a
                ``retry`` function of the wrong arity.

        A call raises :class:`BgKeyConflictError` when another function runs
        the same key in the client, and the first load's error when there is
        no value to serve.
        """
        config = BgConfig.checked(
            "bg",
            interval,
            key,
            ttl,
            store,
            metrics,
            on_error,
            run_immediately,
            client,
            retry,
            jitter,
        )

        def decorate(func: Callable[[], Any]) -> BackgroundFunction[Any]:
            _check_no_arguments(func)
            return Background(config, ("bg", key), func).wrapper()

        return cast(BackgroundDecorator, decorate)

    def write(
        self,
        interval: float,
        *,
        key: str,
        store: Any,
        ttl: float | None = None,
        metrics: MetricsCollector | None = None,
        on_error: ErrorHandler | None = None,
        run_immediately: bool = True,
        retry: RetryPolicy | None = None,
        jitter: float | None = None,
    ) -> BackgroundDecorator:
        """The writer of a value shared through ``store``: ``@bg`` whose every refresh lands there.

        Run it in one process; other processes read the value with
        :meth:`read`.  Each refresh is written to the store (write-behind,
        retried while the store fails) and, on Redis, announced to the
        readers.  Same arguments and errors as ``bg(...)``, ``store`` required.
        """
        if store is None:
            raise InvalidOptionError("bg.write(): store is required")
        return self(
            interval,
            key=key,
            ttl=ttl,
            store=store,
            metrics=metrics,
            on_error=on_error,
            run_immediately=run_immediately,
            retry=retry,
            jitter=jitter,
        )

    def read(
        self,
        key: str,
        *,
        interval: float,
        store: Any,
        ttl: float | None = None,
        metrics: MetricsCollector | None = None,
        on_error: ErrorHandler | None = None,
        run_immediately: bool = True,
        serializer: Any = None,
        key_prefix: str | None = None,
        client: QueryClient | None = None,
    ) -> BackgroundFunction[Any]:
        """A reader of the value a :meth:`write` function keeps in ``store``.

        The reader keeps a local copy and polls the store every ``interval``
        seconds (a task in the client's nursery); on a ``RedisStorage`` it
        also subscribes to the writer's client's update messages and reads
        the entry as soon as one names it.  A call returns the local copy at
        once and never touches the store (the first call waits for the first
        read).  The reader never writes the writer's entry (its client, if
        it has an L2 of its own, keeps the copy there under ``("bg.read",
        key)``).  No entry yet, or a corrupt one, is a failed refresh: the
        local copy is kept, retried with the client's backoff, reported to
        ``on_error``.

        Args:
            key: the writer's key.
            interval: seconds between polls (> 0).
            store: the store the writer writes to.
            ttl: seconds the local copy may be served after it was last
                read (then a call waits for a new read); ``None``: however old.
            metrics, on_error, run_immediately, client: as for ``bg(...)``.
            serializer: the writer's serializer (default: ``serializers.json``).
            key_prefix: the writer's client's ``key_prefix`` (default: ``"sq:"``).

        Raises:
            InvalidOptionError: as ``bg(...)``; ``store`` is missing.
            TypeError: as ``bg(...)``.

        A first call raises :class:`MissingValueError` when the store has no
        value after the client's retries.
        """
        if store is None:
            raise InvalidOptionError("bg.read(): store is required")
        config = BgConfig.checked(
            "bg.read", interval, key, ttl, None, metrics, on_error, run_immediately, client
        )
        prefix = QueryClientConfig().key_prefix if key_prefix is None else key_prefix
        codec = as_serializer(serializer) if serializer is not None else json_serializer
        return Background(config, ("bg.read", key), StoreRead(store, prefix, codec, key)).wrapper()


bg: BgDecorator = BgDecorator()
"""``@bg(interval, key=)``, ``@bg.write(interval, key=, store=)``, ``bg.read(key, ...)``."""


def _check_no_arguments(func: Callable[..., Any]) -> None:
    if not callable(func):
        raise TypeError(f"bg() decorates a function, got {type(func).__name__}: {func!r}")
    params = inspect.signature(func).parameters.values()
    required = [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise TypeError(
            f"bg() decorates a function called without arguments; "
            f"{getattr(func, '__qualname__', func)!r} requires {', '.join(required)}"
        )
