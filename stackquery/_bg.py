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

import functools
import inspect
import logging
import math
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar, final

import attrs
import orjson
import trio

from backends import StorageError, ops
from backends._redis_client import RedisClient

from ._client import QueryClient
from ._entry import unpack_entry
from ._errors import InvalidOptionError, StackqueryError
from ._fleet import channel_name
from ._keys import canonical_key
from ._metrics import MetricsCollector
from ._observer import QueryObserver
from ._options import QueryClientConfig, QueryOptions
from ._origin import origin_call
from ._run_clients import ClientChoice
from ._state import QueryStatus
from .serializers import Serializer, as_serializer
from .serializers import json as json_serializer

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
logger = logging.getLogger("stackquery.bg")

ErrorHandler = Callable[[BaseException], object]

# Which bg key each client runs, and for which function: a key registered
# twice in one client would have two loops fighting over one value.
_registered: weakref.WeakKeyDictionary[QueryClient, dict[str, _Background]] = (
    weakref.WeakKeyDictionary()
)


class BgKeyConflictError(StackqueryError, ValueError):
    """Two ``@bg`` functions (or readers) used the same key in one client."""


class MissingValueError(StackqueryError, LookupError):
    """A ``bg.read`` found no value for its key in the store (no writer has written it yet)."""


class BackgroundFunction(Protocol[R_co]):
    """A ``@bg`` function or a ``bg.read`` reader: ``await f()`` returns the latest value."""

    __name__: str
    __qualname__: str
    key: str
    """The bg key."""

    def __call__(self) -> Coroutine[Any, Any, R_co]: ...

    async def start(self) -> None:
        """Start the refresh loop in the client now, without waiting for a value."""


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
    ) -> Callable[[Callable[[], Any]], BackgroundFunction[Any]]:
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

        Raises:
            InvalidOptionError: ``interval`` is not > 0, ``ttl`` is negative,
                ``key`` is empty, or both ``store`` and ``client`` are given.
            TypeError: ``key`` is not a ``str``; the decorated object takes
                arguments or is not callable; ``on_error`` is not callable.

        A call raises :class:`BgKeyConflictError` when another function runs
        the same key in the client, and the first load's error when there is
        no value to serve.
        """
        config = _Config.checked(
            "bg", interval, key, ttl, store, metrics, on_error, run_immediately, client
        )

        def decorate(func: Callable[[], Any]) -> BackgroundFunction[Any]:
            _check_no_arguments(func)
            return _Background(config, ("bg", key), func).wrapper()

        return decorate

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
    ) -> Callable[[Callable[[], Any]], BackgroundFunction[Any]]:
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
        config = _Config.checked(
            "bg.read", interval, key, ttl, None, metrics, on_error, run_immediately, client
        )
        prefix = QueryClientConfig().key_prefix if key_prefix is None else key_prefix
        codec = as_serializer(serializer) if serializer is not None else json_serializer
        return _Background(
            config, ("bg.read", key), _StoreRead(store, prefix, codec, key)
        ).wrapper()


bg: BgDecorator = BgDecorator()
"""``@bg(interval, key=)``, ``@bg.write(interval, key=, store=)``, ``bg.read(key, ...)``."""


@attrs.frozen
class _Config:
    """A ``@bg`` / ``bg.read``'s settings, validated."""

    interval: float
    key: str
    ttl: float | None
    choice: ClientChoice
    metrics: MetricsCollector | None
    on_error: ErrorHandler | None
    run_immediately: bool

    @classmethod
    def checked(
        cls,
        who: str,
        interval: object,
        key: object,
        ttl: object,
        store: Any,
        metrics: MetricsCollector | None,
        on_error: ErrorHandler | None,
        run_immediately: bool,
        client: QueryClient | None,
    ) -> _Config:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise InvalidOptionError(
                f"{who}(): interval must be a number of seconds, got {interval!r}"
            )
        if math.isnan(interval) or interval <= 0:
            raise InvalidOptionError(f"{who}(): interval must be > 0 seconds, got {interval!r}")
        if not isinstance(key, str):
            raise TypeError(f"{who}(): key must be a str, got {type(key).__name__}: {key!r}")
        if not key:
            raise InvalidOptionError(f"{who}(): key must not be empty")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int | float) or math.isnan(ttl) or ttl < 0
        ):
            raise InvalidOptionError(f"{who}(): ttl must be None or >= 0 seconds, got {ttl!r}")
        if client is not None and not isinstance(client, QueryClient):
            raise TypeError(f"{who}(): client must be a QueryClient, got {type(client).__name__}")
        if client is not None and store is not None:
            raise InvalidOptionError(f"{who}(): give client= or store=, not both")
        if metrics is not None and not isinstance(metrics, MetricsCollector):
            raise TypeError(f"{who}(): metrics must be a MetricsCollector, got {metrics!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"{who}(): on_error must be callable, got {on_error!r}")
        return cls(
            interval=float(interval),
            key=key,
            ttl=None if ttl is None or ttl == math.inf else float(ttl),
            choice=ClientChoice(client=client, store=store),
            metrics=metrics,
            on_error=on_error,
            run_immediately=bool(run_immediately),
        )


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


@attrs.frozen
class _StoreRead:
    """A reader's origin: the writer's entry, read from the shared store."""

    store: Any
    key_prefix: str
    serializer: Serializer
    key: str
    entry_hash: str = attrs.field(init=False)
    """The writer's key hash: what its client's update messages name."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "entry_hash", canonical_key(("bg", self.key))[1])

    async def __call__(self) -> Any:
        raw = await ops.get(self.store, self.key_prefix + self.entry_hash)
        if raw is None:
            raise MissingValueError(f"the store holds no value for bg key {self.key!r}")
        return unpack_entry(raw, self.serializer).value

    async def follow_messages(self, observer: QueryObserver[Any]) -> None:
        """Read the entry again each time the writer announces it, until cancelled.

        Only on Redis (the writer's client publishes on its key prefix's
        channel once an entry landed).  The poll stays the fallback: messages
        are lost while the subscription is down, so each (re)subscription
        reads the entry once.
        """
        redis = getattr(self.store, "redis", None)
        if not isinstance(redis, RedisClient):
            return
        channel = channel_name(self.key_prefix)
        backoff = 0.1
        while True:
            try:
                async with redis.subscribe(channel) as messages:
                    backoff = 0.1
                    await observer.refetch()
                    async for _channel, data in messages:
                        if self._names_entry(data):
                            await observer.refetch()
            except StorageError as exc:
                logger.warning("bg.read %r: subscription to %s failed: %r", self.key, channel, exc)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _names_entry(self, data: bytes) -> bool:
        try:
            message = orjson.loads(data)
            op, keys = message["op"], message["k"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        if op == "upd":
            return any(isinstance(k, list) and k and k[0] == self.entry_hash for k in keys)
        return op == "del" and self.entry_hash in keys


class _Background:
    """One ``@bg`` function or reader: its options, and its loop in each client."""

    def __init__(
        self, config: _Config, query_key: tuple[str, str], func: Callable[[], Any]
    ) -> None:
        self.config = config
        self.func = func
        self.name = f"{query_key[0]}:{config.key}"
        ttl = config.ttl
        self.options: QueryOptions[Any] = QueryOptions(
            query_key=query_key,
            query_fn=origin_call(func, (), {}, name=self.name, metrics=config.metrics),
            stale_time=math.inf,
            gc_time=math.inf if ttl is None else ttl,
            max_age=ttl,
            on_error=self._report_error,
            # A reader's poll is one GET: cheaper than a fleet-wide lease.
            single_flight=False if isinstance(func, _StoreRead) else None,
        )
        self.resolve = config.choice.resolver()
        self.running_in: QueryClient | None = None
        """The client this function's loop last ran in: the hot path serves only there."""

    def wrapper(self) -> BackgroundFunction[Any]:
        """Return the function users call, picked for metrics on or off."""
        resolve = self.resolve
        options = self.options
        key_hash = options.key_hash
        stale_time = options.stale_time
        slow = self.call

        if self.config.metrics is None:

            async def latest() -> Any:
                client = resolve()
                # Only in the client this function last ran its loop in: elsewhere the
                # slow path starts the loop (or finds another function owning the key).
                if client is not None and client is self.running_in:
                    snap = client._table.get(key_hash)
                    if snap is not None and snap.fresh and snap.stale_time is stale_time:
                        return snap.state.data
                return await slow(client)

        else:
            measured = self.call_measured

            async def latest() -> Any:
                return await measured()

        wrapped: Any = latest
        if not isinstance(self.func, _StoreRead):
            wrapped = functools.wraps(self.func)(latest)
        else:
            wrapped.__name__ = wrapped.__qualname__ = f"bg_read_{self.config.key}"
        wrapped.key = self.config.key
        wrapped.start = self.start
        return wrapped  # type: ignore[no-any-return]

    # -- calls --------------------------------------------------------------------

    async def call(self, client: QueryClient | None) -> Any:
        """Everything but a fresh hit: start the loop if needed; serve the last value or wait."""
        if client is None:
            client = await self.config.choice.open()
        self._ensure_running(client)
        snap = client._table.get(self.options.key_hash)
        if snap is not None and snap.state.has_data and not client._too_old(snap, self.options):
            return snap.state.data  # a refresh failed: the last value is kept
        return await client.fetch_query(self.options)

    async def call_measured(self) -> Any:
        metrics = self.config.metrics
        assert metrics is not None
        start = trio.current_time()
        try:
            client = self.resolve()
            if client is None:
                client = await self.config.choice.open()
            self._ensure_running(client)
            snap = client._table.get(self.options.key_hash)
            if snap is not None and snap.state.has_data and not client._too_old(snap, self.options):
                if snap.fresh:
                    metrics.record_hit(self.name)
                else:
                    metrics.record_stale_hit(self.name)
                return snap.state.data
            metrics.record_miss(self.name)
            return await client.fetch_query(self.options)
        finally:
            metrics.record_latency(self.name, "get", trio.current_time() - start)

    async def start(self) -> None:
        """Start the refresh loop in the client now, without waiting for a value.

        Raises:
            BgKeyConflictError: another function runs this key in the client.
        """
        client = await self.config.choice.open()
        self._ensure_running(client)

    # -- the loop -------------------------------------------------------------------

    def _ensure_running(self, client: QueryClient) -> None:
        client._check_open()
        keys = _registered.setdefault(client, {})
        owner = keys.get(self.options.key_hash)
        if owner is self:
            self.running_in = client
            return
        if owner is not None:
            raise BgKeyConflictError(
                f"bg key {self.config.key!r} is already refreshed in this client by "
                f"{getattr(owner.func, '__qualname__', owner.func)!r}"
            )
        keys[self.options.key_hash] = self
        self.running_in = client
        nursery = client._nursery
        assert nursery is not None
        nursery.start_soon(self._refresh_loop, client, name=self.name)

    async def _refresh_loop(self, client: QueryClient) -> None:
        observer = client.watch(self.options)
        try:
            async with trio.open_nursery() as nursery:
                if isinstance(self.func, _StoreRead):
                    nursery.start_soon(self.func.follow_messages, observer)
                await self._refresh_every_interval(observer)
        finally:
            if self.running_in is client:
                self.running_in = None  # a closed client is not kept alive by us

    async def _refresh_every_interval(self, observer: QueryObserver[Any]) -> None:
        interval = self.config.interval
        metrics = self.config.metrics
        if not self.config.run_immediately:
            await trio.sleep(interval)
        while True:
            start = trio.current_time()
            state = await observer.refetch()
            if metrics is not None:
                ok = state.status is QueryStatus.SUCCESS
                metrics.record_background_refresh(self.name, ok, trio.current_time() - start)
            await trio.sleep_until(max(start + interval, trio.current_time()))

    def _report_error(self, error: BaseException) -> None:
        if self.config.on_error is None:
            logger.warning("refresh of %s failed: %r", self.name, error)
            return
        self.config.on_error(error)
