"""QueryClientConfig and QueryOptions: validated, frozen settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from actors import RestartIntensity

from ._circuit import CircuitBreaker, check_circuit
from ._errors import InvalidOptionError
from ._freshness import check_jitter, check_seed, number_or_function
from ._keys import QueryKey, canonical_key
from ._option_checks import (
    NO_META,
    STORAGE_TTL,
    UNSET,
    check_admin_socket,
    check_key_prefix,
    check_meta,
    check_query_fn,
    check_restart_intensity,
    check_serializer,
    check_storage,
    checked_retry_delay,
    delays,
    flag,
    is_async_callable,
    optional_callable,
    positive_int,
    retries,
    retry_count,
    seconds,
    takes_context,
)
from ._retry import default_retry_delay
from ._retry_policy import RetryDelaySpec, RetryPolicy, RetryRule

T = TypeVar("T")


@attrs.frozen
class QueryClientConfig:
    """Settings of a query client; each query may override the per-query ones.

    Entries written to ``storage`` expire with their key's ``gc_time`` (300 s
    by default, in SQLite and Redis too) unless ``storage_ttl`` says how long
    they live in the store (``None``: until deleted)::

        import trio

        import stackquery as sq


        async def load_user() -> dict:
            return {"id": 42, "name": "Ada"}


        async def main() -> None:
            user = sq.QueryOptions(query_key=("user", 42), query_fn=load_user)
            async with sq.SQLiteStorage("cache.sqlite3") as store:
                # storage_ttl unset: the entry leaves SQLite with the key's gc_time.
                config = sq.QueryClientConfig(storage=store)
                async with sq.open_query_client(config) as client:
                    await client.fetch_query(user)
                _, ttl = await store.get_with_ttl('sq:["user",42]')
                print(round(ttl))  # 300

                # storage_ttl=None: kept until deleted (or seconds: 7 * 24 * 3600).
                config = sq.QueryClientConfig(storage=store, storage_ttl=None)
                async with sq.open_query_client(config) as client:
                    await client.set_query_data(("user", 42), {"id": 42, "name": "Ada L."})
                _, ttl = await store.get_with_ttl('sq:["user",42]')
                print(ttl)  # None


        trio.run(main)

    Raises (at construction):
        InvalidOptionError: a setting of the wrong type or out of range (a
            negative, NaN or, where it would hang or overflow, infinite time; a
            ``storage`` that is not a store; a ``key_prefix`` that is not text,
            a ``jitter`` outside [0, 1) ...); the message names the setting and,
            when there is one, the fix.
        TypeError: a ``retry``, ``retry_delay`` or ``stale_time`` function of the
            wrong shape (see :mod:`stackquery._retry_policy`).
    """

    stale_time: float | Callable[[Any], float] = attrs.field(
        default=0.0,
        validator=number_or_function("stale_time", seconds("stale_time", allow_none=False), "data"),
    )
    """Seconds data stays fresh after it was fetched; ``math.inf``: never stale; or
    ``stale_time(data) -> float``, computed when data lands."""
    gc_time: float = attrs.field(default=300.0, validator=seconds("gc_time", allow_none=False))
    """Seconds an unobserved key stays in L1 after its last use; ``math.inf``: forever."""
    retry: RetryPolicy = attrs.field(default=3, validator=retries(allow_none=False))
    """Retries after a failed attempt of ``query_fn`` (0: fail at once), or
    ``retry(failure_count, error) -> bool`` (``failure_count``: failures before this one)."""
    retry_delay: RetryDelaySpec = attrs.field(
        default=default_retry_delay, validator=delays(allow_none=False)
    )
    """Seconds before a retry: a number, or a function of the 0-based retry number
    (``failure_count``), or of ``(failure_count, error)``."""
    storage: Any = attrs.field(default=None, validator=check_storage)
    """The L2 store (a ``backends.StorageBackend``: async ``get``, ``set``, ``delete``),
    or ``None`` for L1 only.  Its entries expire with each key's ``gc_time`` unless
    ``storage_ttl`` is set (see above)."""
    serializer: Any = attrs.field(default=None, validator=check_serializer)
    """How values become bytes in L2; ``None`` means ``serializers.json``."""
    max_queries: int | None = attrs.field(default=None)
    """Bound on keys held in L1; the least recently used idle key is evicted."""
    key_prefix: str = attrs.field(default="sq:", validator=check_key_prefix)
    """Prefix of every L2 key (and pub/sub channel) this client writes."""
    mailbox_capacity: int = attrs.field(default=1024, validator=positive_int("mailbox_capacity"))
    """Messages a key's actor queues before senders get backpressure."""
    l2_timeout: float = attrs.field(
        default=2.0, validator=seconds("l2_timeout", allow_none=False, allow_zero=False)
    )
    """Seconds an L2 call may take before it counts as failed: the longest a caller waits
    for the store, whatever the store (a call in a worker thread finishes later, and a
    late read's answer is dropped)."""
    shutdown_timeout: float = attrs.field(
        default=5.0, validator=seconds("shutdown_timeout", allow_none=False)
    )
    """Seconds pending L2 writes may take to finish when the client closes."""
    broadcast: bool | None = attrs.field(default=None, validator=flag("broadcast", allow_none=True))
    """Publish invalidations and new data to other processes on the same Redis
    (``None``: on when ``storage`` is a ``RedisStorage``)."""
    single_flight: bool | None = attrs.field(
        default=None, validator=flag("single_flight", allow_none=True)
    )
    """Fleet-wide single flight: one process calls the origin for a key, the others
    wait for its value in Redis (``None``: on when ``storage`` is a ``RedisStorage``)."""
    lease_time: float = attrs.field(
        default=10.0,
        validator=seconds("lease_time", allow_none=False, allow_zero=False, allow_inf=False),
    )
    """Seconds a single-flight lease lives unless its holder renews it (a dead holder's
    lease frees itself after this long)."""
    lease_poll_interval: float = attrs.field(
        default=0.25,
        validator=seconds(
            "lease_poll_interval", allow_none=False, allow_zero=False, allow_inf=False
        ),
    )
    """Seconds between looks at Redis while waiting for another process's value."""
    redis_tracking: bool | None = attrs.field(
        default=None, validator=flag("redis_tracking", allow_none=True)
    )
    """Hear writes this client did not make: the Redis server names every entry key
    that changes (another tool's write, an expiry, an eviction, a ``FLUSHDB``) and the
    fleet marks what L1 holds of it stale (``CLIENT TRACKING ... BCAST``, on every
    master of a cluster; see "Hearing writes we did not make" in the README).
    ``None``: on whenever the fleet broadcasts;
    ``True`` needs ``broadcast`` (its subscription hears the server)."""
    restart_intensity: RestartIntensity = attrs.field(
        factory=RestartIntensity, validator=check_restart_intensity
    )
    """Actor crashes absorbed (restart from the last snapshot) before the client fails."""
    storage_ttl: Any = attrs.field(default=UNSET)
    """TTL of L2 entries in seconds; ``None``: no expiry; unset: each key's ``gc_time``
    (300 s by default: a persistent store then forgets an entry as soon as L1 would)."""
    admin_socket: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=check_admin_socket
    )
    """A Unix socket path where the client serves its attach endpoint to operators
    (``stackquery top --attach PATH``): snapshot, statistics, recent events, and
    invalidate / refetch / remove by prefix.  Created owner-only (0600) when the client
    opens, removed when it closes; ``None`` (the default): no endpoint."""
    stale_if_error: float = attrs.field(
        default=0.0, validator=seconds("stale_if_error", allow_none=False)
    )
    """Seconds past the moment a query's data stops being servable (its ``max_age`` or
    ``max_stale``) during which its last good data is still served
    when the refetch fails (``0``: the callers get the error); see
    ``QueryOptions.stale_if_error``."""

    jitter: float = attrs.field(default=0.0, validator=check_jitter(allow_none=False))
    """Spread of each fresh period (and ``@bg`` interval): ``0.1`` draws it uniformly
    within ±10% of ``stale_time``, so keys filled together do not go stale together."""
    seed: int | None = attrs.field(default=None, validator=check_seed)
    """Seed of the client's own ``random.Random`` (jitter draws); ``None``: from the OS."""
    retry_rule: RetryRule = attrs.field(init=False, repr=False, eq=False)
    """``retry`` and ``retry_delay`` compiled (a function's arity decided once)."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "retry_rule", RetryRule.of(self.retry, self.retry_delay))

    @redis_tracking.validator
    def _check_redis_tracking(self, attribute: object, value: Any) -> None:
        if value is True and self.broadcast is False:
            raise InvalidOptionError(
                "redis_tracking=True needs the fleet's subscription, which broadcast=False "
                "turns off; set broadcast=None/True, or redis_tracking=None/False"
            )

    @storage_ttl.validator
    def _check_storage_ttl(self, attribute: object, value: Any) -> None:
        if value is not UNSET:
            STORAGE_TTL(self, attribute, value)

    @max_queries.validator
    def _check_max_queries(self, _attribute: object, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidOptionError(f"max_queries must be None or an int >= 1, got {value!r}")


@attrs.frozen
class QueryOptions(Generic[T]):
    """What to fetch for a key, and how.  Fields left ``None`` take the query defaults of
    the key's prefix (``QueryClient.set_query_defaults``), else the client's value.

    Raises (at construction):
        InvalidKeyError: ``query_key`` is not a valid key.
        TypeError: ``query_fn`` or a callback is not callable, or ``query_fn``
            requires more than one argument, or one it cannot take positionally
            (it is called with none, or with its :class:`QueryContext` when it has
            exactly one parameter without a default; a callable whose signature
            cannot be read is called with none); ``meta`` is not a mapping;
            ``circuit`` is not a :class:`CircuitBreaker`; ``cache_if`` is not
            callable; a ``retry`` function
            that does not take ``(failure_count, error)``, a ``retry_delay``
            function taking neither ``(failure_count)`` nor ``(failure_count,
            error)``, a ``stale_time`` / ``refetch_interval`` function that does
            not take one argument.
        InvalidOptionError: a time is negative or NaN (or an infinite
            ``retry_delay``; a zero ``error_ttl``), ``retry`` is neither an int
            >= 0 nor callable, ``jitter`` is outside [0, 1), a flag is not a ``bool``.
    """

    query_key: QueryKey = attrs.field()
    """The key, a tuple such as ``("user", 42)``."""
    query_fn: Callable[..., Any] = attrs.field(validator=check_query_fn)
    """Loads the value: awaited if async, else run in a worker thread.  Called with no
    argument, or with a :class:`QueryContext` if it has exactly one parameter without a
    default; it may return :data:`NOT_MODIFIED` to keep the key's data (fresh as of now)."""
    stale_time: float | Callable[[Any], float] | None = attrs.field(
        default=None,
        validator=number_or_function("stale_time", seconds("stale_time", allow_none=True), "data"),
    )
    """Seconds data stays fresh, or ``stale_time(data) -> float`` computed when data lands."""
    gc_time: float | None = attrs.field(default=None, validator=seconds("gc_time", allow_none=True))
    retry: RetryPolicy | None = attrs.field(default=None, validator=retry_count)
    """Retries after a failed attempt, or ``retry(failure_count, error) -> bool``."""
    retry_delay: RetryDelaySpec | None = attrs.field(default=None, validator=checked_retry_delay)
    """Seconds before a retry: a number, ``f(failure_count)`` or ``f(failure_count, error)``."""
    enabled: bool = attrs.field(default=True, validator=flag("enabled", allow_none=False))
    """``False``: observers never fetch by themselves (``fetch_query`` still does)."""
    refetch_interval: float | Callable[[Any], float | None] | None = attrs.field(
        default=None,
        validator=number_or_function(
            "refetch_interval",
            seconds("refetch_interval", allow_none=True, allow_zero=False),
            "state",
        ),
    )
    """Seconds between refetches while the key has observers, or
    ``refetch_interval(state) -> float | None`` (``None``: stop polling), asked at each tick."""
    select: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=optional_callable("select")
    )
    """Maps the data an observer's listeners see; applied per observer."""
    placeholder_data: Any = UNSET
    """Shown to observers while the key is pending; never cached, never returned by fetch_query."""
    initial_data: Any = UNSET
    """Cached as if fetched when the key is first created (a value or a no-argument function)."""
    initial_data_updated_at: float | None = attrs.field(
        default=None,
        validator=seconds("initial_data_updated_at", allow_none=True, allow_inf=False),
    )
    """Wall time ``initial_data`` was current; ``None``: now."""
    timeout: float | None = attrs.field(
        default=None, validator=seconds("timeout", allow_none=True, allow_zero=False)
    )
    """Seconds one attempt of ``query_fn`` may take; past it the attempt fails."""
    on_success: Callable[[Any], object] | None = attrs.field(
        default=None, validator=optional_callable("on_success")
    )
    on_error: Callable[[BaseException], object] | None = attrs.field(
        default=None, validator=optional_callable("on_error")
    )
    on_settled: Callable[[Any, BaseException | None], object] | None = attrs.field(
        default=None, validator=optional_callable("on_settled")
    )
    single_flight: bool | None = attrs.field(
        default=None, validator=flag("single_flight", allow_none=True)
    )
    """Override the client's fleet-wide single flight for this query."""
    max_age: float | None = attrs.field(default=None, validator=seconds("max_age", allow_none=True))
    """Seconds after its fetch past which data is no longer served stale by ``fetch_query``
    (nor taken from L2): the caller waits for a new fetch.  ``None``: served however old."""
    stale_if_error: float | None = attrs.field(
        default=None, validator=seconds("stale_if_error", allow_none=True)
    )
    """Seconds past the moment data stops being servable (``fetched_at + max_age`` or
    ``stale_at + max_stale``, whichever comes first) during which the last good data is
    still served when the refetch fails: a caller that must wait for a new value gets the
    old one instead of the error until that moment + ``stale_if_error``.  ``None``: the
    client's (0 by default); no effect without ``max_age`` or ``max_stale`` (data is then
    served stale however old)."""
    circuit: CircuitBreaker | None = attrs.field(default=None, validator=check_circuit)
    """A :class:`CircuitBreaker` every origin call of this query goes through (shared
    with whatever else uses it); ``None``: none."""
    meta: Mapping[str, Any] = attrs.field(default=NO_META, validator=check_meta, eq=False)
    """Free-form data for the ``query_fn`` (``QueryContext.meta``); never read by stackquery."""
    key: QueryKey = attrs.field(init=False, repr=False, eq=False)
    """The canonical key (integral floats as ints, dicts validated)."""
    key_hash: str = attrs.field(init=False, repr=False, eq=False)
    """Canonical JSON of the key: the L1 table's key and the L2 key's suffix."""
    is_async: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``query_fn`` is awaited (True) or run in a worker thread."""
    takes_context: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``query_fn`` is called with a :class:`QueryContext` (its one required
    parameter), decided once, here."""
    jitter: float | None = attrs.field(default=None, validator=check_jitter(allow_none=True))
    """Spread of each fresh period, a fraction in [0, 1); ``None``: the client's."""
    error_ttl: float | None = attrs.field(
        default=None, validator=seconds("error_ttl", allow_none=True, allow_zero=False)
    )
    """Seconds a failed fetch's error is remembered: a read in that window gets the error
    (or the stale data) without an origin call; ``invalidate_queries`` forgets it."""
    cache_if: Callable[[Any], object] | None = attrs.field(
        default=None, validator=optional_callable("cache_if")
    )
    """``cache_if(value)``: a fetched value it is false for goes to the fetch's waiters but is
    not cached (not in L1, not in L2); ``None``: every value is cached."""
    max_stale: float | None = attrs.field(
        default=None, validator=seconds("max_stale", allow_none=True)
    )
    """Seconds data may be served stale after it went stale (its computed, jittered stale
    time counted); past it the caller waits for a new fetch.  ``None``: no such bound."""
    retry_rule: RetryRule = attrs.field(init=False, repr=False, eq=False)
    """``retry`` and ``retry_delay`` compiled (a function's arity decided once)."""
    defaults_memo: Any = attrs.field(init=False, default=None, repr=False, eq=False)
    """The client's cache of these options with its query defaults filled in (see
    ``set_query_defaults``): ``(version, resolved)``; not for users."""

    def __attrs_post_init__(self) -> None:
        key, key_hash = canonical_key(self.query_key)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "key_hash", key_hash)
        object.__setattr__(self, "is_async", is_async_callable(self.query_fn))
        object.__setattr__(self, "takes_context", takes_context(self.query_fn))
        object.__setattr__(self, "retry_rule", RetryRule.of(self.retry, self.retry_delay))
