"""One ``@bg`` function or ``bg.read`` reader: its query, its calls, its loop in each client."""

from __future__ import annotations

import functools
import logging
import math
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import attrs
import trio

from .._client import QueryClient
from .._errors import ClientClosedError, InvalidOptionError, StackqueryError
from .._freshness import jittered
from .._observer import QueryObserver
from .._options import QueryOptions
from .._state import QueryStatus
from ..metrics._collector import MetricsCollector
from ._bg_reader import StoreRead
from ._origin import origin_call
from ._origin_protection import OriginProtection
from ._run_clients import ClientChoice

R_co = TypeVar("R_co", covariant=True)
logger = logging.getLogger("stackquery.bg")

ErrorHandler = Callable[[BaseException], object]

# Which bg key each client runs, and for which function: a key registered
# twice in one client would have two loops fighting over one value.
_registered: weakref.WeakKeyDictionary[QueryClient, dict[str, Background]] = (
    weakref.WeakKeyDictionary()
)


class BgKeyConflictError(StackqueryError, ValueError):
    """Two ``@bg`` functions (or readers) used the same key in one client."""


class BackgroundFunction(Protocol[R_co]):
    """A ``@bg`` function or a ``bg.read`` reader: ``await f()`` returns the latest value."""

    __name__: str
    __qualname__: str
    key: str
    """The bg key."""

    def __call__(self) -> Coroutine[Any, Any, R_co]: ...

    async def start(self) -> None:
        """Start the refresh loop in the client now, without waiting for a value."""


@attrs.frozen
class BgConfig:
    """A ``@bg`` / ``bg.read``'s settings, validated."""

    interval: float
    key: str
    ttl: float | None
    choice: ClientChoice
    metrics: MetricsCollector | None
    on_error: ErrorHandler | None
    run_immediately: bool
    origin: OriginProtection = attrs.field(factory=OriginProtection)
    """``retry`` (passed on to the query) and ``jitter`` (of the interval)."""

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
        retry: object = None,
        jitter: object = None,
    ) -> BgConfig:
        """Validate the arguments of ``bg(...)`` / ``bg.read(...)`` (``who`` names it in errors).

        Raises:
            InvalidOptionError: a bad interval, key, ttl, retry or jitter; store and
                client both given.
            TypeError: a key that is not a str; a bad client, metrics or on_error; a
                ``retry`` function of the wrong arity.
        """
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
            origin=OriginProtection.checked(who, retry, jitter),
        )


class Background:
    """One ``@bg`` function or reader: its options, and its loop in each client."""

    def __init__(
        self, config: BgConfig, query_key: tuple[str, str], func: Callable[[], Any]
    ) -> None:
        self.config = config
        self.func = func
        self.name = f"{query_key[0]}:{config.key}"
        ttl = config.ttl
        self.options: QueryOptions[Any] = QueryOptions(
            query_key=query_key,
            query_fn=origin_call(func, (), {}, name=self.name, metrics=config.metrics),
            # Fresh for ttl: then the hot path stops serving it (ttl is a hard
            # bound, also while a refresh hangs) and a call waits for a new value.
            stale_time=math.inf if ttl is None else ttl,
            gc_time=math.inf if ttl is None else ttl,
            max_age=ttl,
            on_error=self._report_error,
            # A reader's poll is one GET: cheaper than a fleet-wide lease.
            single_flight=False if isinstance(func, StoreRead) else None,
            retry=config.origin.retry,
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
                    snap = client.snapshots.get(key_hash)
                    if snap is not None and snap.fresh_for is stale_time:
                        return snap.data
                return await slow(client)

        else:
            measured = self.call_measured

            async def latest() -> Any:
                return await measured()

        wrapped: Any = latest
        if not isinstance(self.func, StoreRead):
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
        snap = client.snapshots.get(self.options.key_hash)
        if snap is not None and snap.has_data and not client.cache.too_old(snap, self.options):
            return snap.data  # a refresh failed: the last value is kept
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
            snap = client.snapshots.get(self.options.key_hash)
            if snap is not None and snap.has_data and not client.cache.too_old(snap, self.options):
                if snap.fresh:
                    metrics.record_hit(self.name)
                else:
                    metrics.record_stale_hit(self.name)
                return snap.data
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
        if not client.is_open:
            raise ClientClosedError("the query client is not open: use it inside `async with`")
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
        client.start_soon(self._refresh_loop, client, name=self.name)

    async def _refresh_loop(self, client: QueryClient) -> None:
        observer = client.watch(self.options)
        try:
            async with trio.open_nursery() as nursery:
                if isinstance(self.func, StoreRead):
                    nursery.start_soon(self.func.follow_messages, observer)
                await self._refresh_every_interval(client, observer)
        finally:
            if self.running_in is client:
                self.running_in = None  # a closed client is not kept alive by us

    async def _refresh_every_interval(
        self, client: QueryClient, observer: QueryObserver[Any]
    ) -> None:
        interval = self.config.interval
        metrics = self.config.metrics
        jitter = self.config.origin.jitter
        if jitter is None:
            jitter = client.config.jitter
        rng = client.cache.freshness.random
        if not self.config.run_immediately:
            await trio.sleep(interval)
        while True:
            start = trio.current_time()
            state = await observer.refetch()
            if metrics is not None:
                ok = state.status is QueryStatus.SUCCESS
                metrics.record_background_refresh(self.name, ok, trio.current_time() - start)
            # Spread (jitter): loops started together do not hit the origin together.
            pause = jittered(interval, jitter, rng)
            await trio.sleep_until(max(start + pause, trio.current_time()))

    def _report_error(self, error: BaseException) -> None:
        if self.config.on_error is None:
            logger.warning("refresh of %s failed: %r", self.name, error)
            return
        self.config.on_error(error)
