"""QueryClientConfig and QueryOptions: validated, frozen settings."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs

from actors import RestartIntensity

from ._errors import InvalidOptionError
from ._keys import QueryKey, canonical_key
from ._retry import default_retry_delay

T = TypeVar("T")


class _Unset:
    """The type of :data:`UNSET`."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()
"""Marks an option that was not given (``None`` is a value)."""


def _seconds(name: str, *, allow_none: bool, allow_zero: bool = True) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOptionError(
                f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}"
            )
        if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise InvalidOptionError(f"{name} must be {bound} seconds, got {value!r}")

    return check


def _retry_count(_instance: object, _attribute: object, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOptionError(f"retry must be an int >= 0, got {value!r}")


def _optional_callable(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable, got {type(value).__name__}: {value!r}")

    return check


def _retry_delay(_instance: object, _attribute: object, value: Any) -> None:
    if value is None or callable(value):
        return
    _seconds("retry_delay", allow_none=False)(_instance, _attribute, value)


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns an awaitable that must be awaited.

    True for an ``async def``, a ``functools.partial`` of one, and an object
    whose ``__call__`` is an ``async def``.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


@attrs.frozen
class QueryClientConfig:
    """Settings of a query client; each query may override the per-query ones."""

    stale_time: float = attrs.field(default=0.0, validator=_seconds("stale_time", allow_none=False))
    """Seconds data stays fresh after it was fetched; ``math.inf``: never stale."""
    gc_time: float = attrs.field(default=300.0, validator=_seconds("gc_time", allow_none=False))
    """Seconds an unobserved key stays in L1 after its last use; ``math.inf``: forever."""
    retry: int = attrs.field(default=3, validator=_retry_count)
    """Retries after a failed attempt of ``query_fn`` (0: fail at once)."""
    retry_delay: Callable[[int], float] | float = attrs.field(
        default=default_retry_delay, validator=_retry_delay
    )
    """Seconds before a retry: a number, or a function of the 0-based retry number."""
    storage: Any = None
    """The L2 store (a ``backends.StorageBackend``), or ``None`` for L1 only."""
    serializer: Any = None
    """How values become bytes in L2; ``None`` means ``serializers.json``."""
    max_queries: int | None = attrs.field(default=None)
    """Bound on keys held in L1; the least recently used idle key is evicted."""
    key_prefix: str = "sq:"
    """Prefix of every L2 key (and pub/sub channel) this client writes."""
    mailbox_capacity: int = 1024
    """Messages a key's actor queues before senders get backpressure."""
    l2_timeout: float = attrs.field(
        default=2.0, validator=_seconds("l2_timeout", allow_none=False, allow_zero=False)
    )
    """Seconds an L2 call may take before it counts as failed."""
    shutdown_timeout: float = attrs.field(
        default=5.0, validator=_seconds("shutdown_timeout", allow_none=False)
    )
    """Seconds pending L2 writes may take to finish when the client closes."""
    broadcast: bool | None = None
    """Publish invalidations and new data to other processes on the same Redis
    (``None``: on when ``storage`` is a ``RedisStorage``)."""
    single_flight: bool | None = None
    """Fleet-wide single flight: one process calls the origin for a key, the others
    wait for its value in Redis (``None``: on when ``storage`` is a ``RedisStorage``)."""
    lease_time: float = attrs.field(
        default=10.0, validator=_seconds("lease_time", allow_none=False, allow_zero=False)
    )
    """Seconds a single-flight lease lives unless its holder renews it (a dead holder's
    lease frees itself after this long)."""
    lease_poll_interval: float = attrs.field(
        default=0.25,
        validator=_seconds("lease_poll_interval", allow_none=False, allow_zero=False),
    )
    """Seconds between looks at Redis while waiting for another process's value."""
    restart_intensity: RestartIntensity = attrs.field(factory=RestartIntensity)
    """Actor crashes absorbed (restart from the last snapshot) before the client fails."""
    storage_ttl: Any = attrs.field(default=UNSET)
    """TTL of L2 entries in seconds; ``None``: no expiry; unset: each key's ``gc_time``."""

    @storage_ttl.validator
    def _check_storage_ttl(self, attribute: object, value: Any) -> None:
        if value is not UNSET:
            _seconds("storage_ttl", allow_none=True, allow_zero=False)(self, attribute, value)

    @max_queries.validator
    def _check_max_queries(self, _attribute: object, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidOptionError(f"max_queries must be None or an int >= 1, got {value!r}")


@attrs.frozen
class QueryOptions(Generic[T]):
    """What to fetch for a key, and how.  Fields left ``None`` take the client's value.

    Raises (at construction):
        InvalidKeyError: ``query_key`` is not a valid key.
        TypeError: ``query_fn`` or a callback is not callable.
        InvalidOptionError: a time is negative or NaN, ``retry`` is negative.
    """

    query_key: QueryKey = attrs.field()
    """The key, a tuple such as ``("user", 42)``."""
    query_fn: Callable[[], Any] = attrs.field()
    """Loads the value: awaited if async, else run in a worker thread."""
    stale_time: float | None = attrs.field(
        default=None, validator=_seconds("stale_time", allow_none=True)
    )
    gc_time: float | None = attrs.field(
        default=None, validator=_seconds("gc_time", allow_none=True)
    )
    retry: int | None = attrs.field(default=None, validator=_retry_count)
    retry_delay: Callable[[int], float] | float | None = attrs.field(
        default=None, validator=_retry_delay
    )
    enabled: bool = True
    """``False``: observers never fetch by themselves (``fetch_query`` still does)."""
    refetch_interval: float | None = attrs.field(
        default=None, validator=_seconds("refetch_interval", allow_none=True, allow_zero=False)
    )
    """Seconds between refetches while the key has observers."""
    select: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=_optional_callable("select")
    )
    """Maps the data an observer's listeners see; applied per observer."""
    placeholder_data: Any = UNSET
    """Shown to observers while the key is pending; never cached, never returned by fetch_query."""
    initial_data: Any = UNSET
    """Cached as if fetched when the key is first created (a value or a no-argument function)."""
    initial_data_updated_at: float | None = None
    """Wall time ``initial_data`` was current; ``None``: now."""
    timeout: float | None = attrs.field(
        default=None, validator=_seconds("timeout", allow_none=True, allow_zero=False)
    )
    """Seconds one attempt of ``query_fn`` may take; past it the attempt fails."""
    on_success: Callable[[Any], object] | None = attrs.field(
        default=None, validator=_optional_callable("on_success")
    )
    on_error: Callable[[BaseException], object] | None = attrs.field(
        default=None, validator=_optional_callable("on_error")
    )
    on_settled: Callable[[Any, BaseException | None], object] | None = attrs.field(
        default=None, validator=_optional_callable("on_settled")
    )
    single_flight: bool | None = None
    """Override the client's fleet-wide single flight for this query."""
    max_age: float | None = attrs.field(
        default=None, validator=_seconds("max_age", allow_none=True)
    )
    """Seconds after its fetch past which data is no longer served stale by ``fetch_query``
    (nor taken from L2): the caller waits for a new fetch.  ``None``: served however old."""
    key: QueryKey = attrs.field(init=False, repr=False, eq=False)
    """The canonical key (integral floats as ints, dicts validated)."""
    key_hash: str = attrs.field(init=False, repr=False, eq=False)
    """Canonical JSON of the key: the L1 table's key and the L2 key's suffix."""
    is_async: bool = attrs.field(init=False, repr=False, eq=False)
    """Whether ``query_fn`` is awaited (True) or run in a worker thread."""

    @query_fn.validator
    def _check_query_fn(self, _attribute: object, value: object) -> None:
        if not callable(value):
            raise TypeError(f"query_fn must be callable, got {type(value).__name__}: {value!r}")

    def __attrs_post_init__(self) -> None:
        key, key_hash = canonical_key(self.query_key)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "key_hash", key_hash)
        object.__setattr__(self, "is_async", is_async_callable(self.query_fn))
