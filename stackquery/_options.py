"""QueryClientConfig and QueryOptions: validated, frozen settings."""

from __future__ import annotations

import functools
import inspect
import math
import os
import types
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, Final, Generic, TypeVar

import attrs

from actors import RestartIntensity
from backends import RedisClient

from ._errors import InvalidOptionError
from ._freshness import check_jitter, check_seed, number_or_function
from ._keys import QueryKey, canonical_key
from ._retry import default_retry_delay
from ._retry_policy import RetryDelaySpec, RetryPolicy, RetryRule, check_retry, delay_arity
from .serializers import as_serializer

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


def _got(value: object) -> str:
    """``type: repr`` of a refused value (the repr cut at 100 characters), for the messages."""
    return f"{type(value).__name__}: {value!r:.100}"


def _seconds(
    name: str,
    *,
    allow_none: bool,
    allow_zero: bool = True,
    allow_inf: bool = True,
    instead_of_inf: str = "",
) -> Any:
    """A validator of a time in seconds; ``instead_of_inf`` ends the message refusing ``inf``."""

    def check(_instance: object, _attribute: object, value: object) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidOptionError(f"{name} must be a number of seconds, got {_got(value)}")
        if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise InvalidOptionError(f"{name} must be {bound} seconds, got {value!r}")
        if value == math.inf and not allow_inf:
            raise InvalidOptionError(
                f"{name} must be a finite number of seconds, got {value!r}{instead_of_inf}"
            )

    return check


def _retries(*, allow_none: bool) -> Any:
    return check_retry(allow_none=allow_none)


_retry_count = _retries(allow_none=True)
"""``retry`` of a query or mutation: ``None`` takes the client's."""


def _flag(name: str, *, allow_none: bool) -> Any:
    """A validator of a ``bool`` (or ``None``): a truthy stand-in would be read silently."""
    allowed = "True, False or None" if allow_none else "True or False"

    def check(_instance: object, _attribute: object, value: object) -> None:
        if not (isinstance(value, bool) or (value is None and allow_none)):
            raise InvalidOptionError(f"{name} must be {allowed}, got {_got(value)}")

    return check


def _positive_int(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"{name} must be an int >= 1, got {value!r}")

    return check


def _optional_callable(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable, got {_got(value)}")

    return check


def _delays(*, allow_none: bool) -> Any:
    seconds = _seconds(
        "retry_delay",
        allow_none=False,
        allow_inf=False,
        instead_of_inf="; use retry=0 for no retries",
    )

    def check(instance: object, attribute: object, value: Any) -> None:
        if value is None and allow_none:
            return
        if callable(value):
            delay_arity(value)  # a function of the wrong shape: TypeError now, not at a retry
            return
        seconds(instance, attribute, value)

    return check


_retry_delay = _delays(allow_none=True)
"""``retry_delay`` of a query or mutation: ``None`` takes the client's."""

_STORE_URL_SCHEMES = ("redis://", "rediss://", "unix://")
_SERIALIZER_NAMES: Mapping[str, str] = {
    "json": "stackquery.serializers.json",
    "msgpack": "stackquery.serializers.msgpack",
    "pickle": "stackquery.serializers.pickle(key=...)",
}


def _check_storage(_instance: object, _attribute: object, value: object) -> None:
    if value is None:
        return
    problem = _store_problem(value)
    if problem is not None:
        raise InvalidOptionError(
            f"storage must be a store with async get, set and delete, {problem}"
        )


def _store_problem(value: object) -> str | None:
    """What keeps ``value`` from being a StorageBackend, with the fix when there is one."""
    if isinstance(value, str | PurePath):
        if isinstance(value, str) and value.startswith(_STORE_URL_SCHEMES):
            return f"got {_got(value)}; use RedisStorage({value!r})"
        return f"got {_got(value)}; use SQLiteStorage({value!r})"
    if isinstance(value, type):
        return f"got the class {value.__qualname__}; use an instance: {value.__qualname__}()"
    # A redis-py asyncio client is told by its module, so as to import nothing.
    if isinstance(value, RedisClient) or type(value).__module__.startswith("redis.asyncio."):
        return f"got {_got(value)}; use RedisStorage(client)"
    for name in ("get", "set", "delete"):
        method = getattr(value, name, None)
        if method is None or not callable(method):
            return f"got {_got(value)}; it has no {name}"
        if not _may_be_async(method):
            return f"got {_got(value)}; its {name} is not async"
    return None


def _may_be_async(method: object) -> bool:
    """False only for a callable known to be synchronous (awaiting its result would fail).

    A sync wrapper made with ``functools.wraps`` counts as what it wraps; a
    callable that cannot be looked into (a builtin, an extension) is given the
    benefit of the doubt.
    """
    try:
        method = inspect.unwrap(method)  # type: ignore[arg-type]
    except ValueError:  # a __wrapped__ cycle
        return True
    if is_async_callable(method):
        return True
    while isinstance(method, functools.partial):
        method = method.func
    if isinstance(method, types.MethodType):
        method = method.__func__
    if isinstance(method, types.FunctionType):
        return False
    return not isinstance(getattr(type(method), "__call__", None), types.FunctionType)  # noqa: B004


def _check_serializer(_instance: object, _attribute: object, value: object) -> None:
    if value is None:
        return
    if isinstance(value, str):
        fix = _SERIALIZER_NAMES.get(value, "an object with dumps and loads")
        raise InvalidOptionError(f"serializer must be a serializer, got {_got(value)}; use {fix}")
    try:
        as_serializer(value)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(f"serializer is not usable: {exc}") from exc


def _check_key_prefix(_instance: object, _attribute: object, value: object) -> None:
    if not isinstance(value, str):
        fix = "; use '' for no prefix" if value is None else ""
        raise InvalidOptionError(f"key_prefix must be a str, got {_got(value)}{fix}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidOptionError(f"key_prefix must be valid unicode text, got {value!r}") from None


ADMIN_SOCKET_MAX_BYTES: Final = 100
"""Longest ``admin_socket`` path, in bytes: a Unix socket's address holds 107, and the
endpoint binds a short temporary name beside it before renaming it into place."""


def _check_admin_socket(_instance: object, _attribute: object, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str | os.PathLike) or isinstance(value, bytes):
        raise InvalidOptionError(f"admin_socket must be a path (str) or None, got {_got(value)}")
    path = os.fspath(value)
    if not isinstance(path, str) or not path or "\0" in path:
        raise InvalidOptionError(
            f"admin_socket must be a non-empty path without NUL characters, got {value!r}"
        )
    size = len(os.fsencode(path))
    if size > ADMIN_SOCKET_MAX_BYTES:
        raise InvalidOptionError(
            f"admin_socket is {size} bytes long; a Unix socket path holds at most "
            f"{ADMIN_SOCKET_MAX_BYTES} here: use a shorter one, such as /run/APP/stackquery.sock"
        )


def _check_restart_intensity(_instance: object, _attribute: object, value: object) -> None:
    if isinstance(value, RestartIntensity):
        return
    if isinstance(value, int) and not isinstance(value, bool):
        fix = f"max_restarts={value!r}"
    elif isinstance(value, tuple) and len(value) == 2:
        fix = f"max_restarts={value[0]!r}, within={value[1]!r}"
    else:
        fix = "max_restarts=..., within=..."
    raise InvalidOptionError(
        f"restart_intensity must be a stackquery.RestartIntensity, got {_got(value)}; "
        f"use stackquery.RestartIntensity({fix})"
    )


def _check_query_fn(_instance: object, _attribute: object, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"query_fn must be callable, got {_got(value)}")
    unbound = _unbound_parameters(value)
    if unbound:
        raise TypeError(
            f"query_fn {_callable_name(value)} requires {', '.join(unbound)} but is called "
            "with no arguments; bind them with functools.partial or a lambda"
        )


def _unbound_parameters(fn: Callable[..., Any]) -> list[str]:
    """The parameters a call ``fn()`` leaves without a value; none if ``fn`` cannot be inspected.

    Plain functions, bound methods and partials of them are read from their
    code object (a fraction of a microsecond, where ``inspect.signature``
    takes several); anything else goes through ``inspect.signature``.
    """
    target: Any = fn
    bound_positional, bound_keywords = 0, {}
    if type(target) is functools.partial:
        bound_positional, bound_keywords = len(target.args), target.keywords
        target = target.func
    if isinstance(target, types.MethodType):
        bound_positional += 1
        target = target.__func__
    if isinstance(target, types.FunctionType):
        return _unbound_in_code(target, bound_positional, bound_keywords)
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return []
    return [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def _unbound_in_code(
    function: types.FunctionType, bound_positional: int, bound_keywords: Mapping[str, Any]
) -> list[str]:
    code = function.__code__
    count = code.co_argcount
    required = count - len(function.__defaults__ or ())
    if required <= bound_positional and not code.co_kwonlyargcount:
        return []  # the usual case, decided without building a list
    unbound = [
        name
        for index, name in enumerate(code.co_varnames[:required])
        if index >= bound_positional
        and (name not in bound_keywords or index < code.co_posonlyargcount)
    ]
    keyword_defaults = function.__kwdefaults__ or {}
    unbound += [
        name
        for name in code.co_varnames[count : count + code.co_kwonlyargcount]
        if name not in keyword_defaults and name not in bound_keywords
    ]
    return unbound


def _callable_name(fn: object) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_callable_name(fn.func)})"
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    return f"{type(fn).__qualname__}.__call__"


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


_STORAGE_TTL = _seconds(
    "storage_ttl",
    allow_none=True,
    allow_zero=False,
    allow_inf=False,
    instead_of_inf="; use None for no expiry",
)


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
        validator=number_or_function(
            "stale_time", _seconds("stale_time", allow_none=False), "data"
        ),
    )
    """Seconds data stays fresh after it was fetched; ``math.inf``: never stale; or
    ``stale_time(data) -> float``, computed when data lands."""
    gc_time: float = attrs.field(default=300.0, validator=_seconds("gc_time", allow_none=False))
    """Seconds an unobserved key stays in L1 after its last use; ``math.inf``: forever."""
    retry: RetryPolicy = attrs.field(default=3, validator=_retries(allow_none=False))
    """Retries after a failed attempt of ``query_fn`` (0: fail at once), or
    ``retry(failure_count, error) -> bool`` (``failure_count``: failures before this one)."""
    retry_delay: RetryDelaySpec = attrs.field(
        default=default_retry_delay, validator=_delays(allow_none=False)
    )
    """Seconds before a retry: a number, or a function of the 0-based retry number
    (``failure_count``), or of ``(failure_count, error)``."""
    storage: Any = attrs.field(default=None, validator=_check_storage)
    """The L2 store (a ``backends.StorageBackend``: async ``get``, ``set``, ``delete``),
    or ``None`` for L1 only.  Its entries expire with each key's ``gc_time`` unless
    ``storage_ttl`` is set (see above)."""
    serializer: Any = attrs.field(default=None, validator=_check_serializer)
    """How values become bytes in L2; ``None`` means ``serializers.json``."""
    max_queries: int | None = attrs.field(default=None)
    """Bound on keys held in L1; the least recently used idle key is evicted."""
    key_prefix: str = attrs.field(default="sq:", validator=_check_key_prefix)
    """Prefix of every L2 key (and pub/sub channel) this client writes."""
    mailbox_capacity: int = attrs.field(default=1024, validator=_positive_int("mailbox_capacity"))
    """Messages a key's actor queues before senders get backpressure."""
    l2_timeout: float = attrs.field(
        default=2.0, validator=_seconds("l2_timeout", allow_none=False, allow_zero=False)
    )
    """Seconds an L2 call may take before it counts as failed: the longest a caller waits
    for the store, whatever the store (a call in a worker thread finishes later, and a
    late read's answer is dropped)."""
    shutdown_timeout: float = attrs.field(
        default=5.0, validator=_seconds("shutdown_timeout", allow_none=False)
    )
    """Seconds pending L2 writes may take to finish when the client closes."""
    broadcast: bool | None = attrs.field(
        default=None, validator=_flag("broadcast", allow_none=True)
    )
    """Publish invalidations and new data to other processes on the same Redis
    (``None``: on when ``storage`` is a ``RedisStorage``)."""
    single_flight: bool | None = attrs.field(
        default=None, validator=_flag("single_flight", allow_none=True)
    )
    """Fleet-wide single flight: one process calls the origin for a key, the others
    wait for its value in Redis (``None``: on when ``storage`` is a ``RedisStorage``)."""
    lease_time: float = attrs.field(
        default=10.0,
        validator=_seconds("lease_time", allow_none=False, allow_zero=False, allow_inf=False),
    )
    """Seconds a single-flight lease lives unless its holder renews it (a dead holder's
    lease frees itself after this long)."""
    lease_poll_interval: float = attrs.field(
        default=0.25,
        validator=_seconds(
            "lease_poll_interval", allow_none=False, allow_zero=False, allow_inf=False
        ),
    )
    """Seconds between looks at Redis while waiting for another process's value."""
    restart_intensity: RestartIntensity = attrs.field(
        factory=RestartIntensity, validator=_check_restart_intensity
    )
    """Actor crashes absorbed (restart from the last snapshot) before the client fails."""
    storage_ttl: Any = attrs.field(default=UNSET)
    """TTL of L2 entries in seconds; ``None``: no expiry; unset: each key's ``gc_time``
    (300 s by default: a persistent store then forgets an entry as soon as L1 would)."""
    admin_socket: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=_check_admin_socket
    )
    """A Unix socket path where the client serves its attach endpoint to operators
    (``stackquery top --attach PATH``): snapshot, statistics, recent events, and
    invalidate / refetch / remove by prefix.  Created owner-only (0600) when the client
    opens, removed when it closes; ``None`` (the default): no endpoint."""

    jitter: float = attrs.field(default=0.0, validator=check_jitter(allow_none=False))
    """Spread of each fresh period (and ``@bg`` interval): ``0.1`` draws it uniformly
    within ±10% of ``stale_time``, so keys filled together do not go stale together."""
    seed: int | None = attrs.field(default=None, validator=check_seed)
    """Seed of the client's own ``random.Random`` (jitter draws); ``None``: from the OS."""
    retry_rule: RetryRule = attrs.field(init=False, repr=False, eq=False)
    """``retry`` and ``retry_delay`` compiled (a function's arity decided once)."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "retry_rule", RetryRule.of(self.retry, self.retry_delay))

    @storage_ttl.validator
    def _check_storage_ttl(self, attribute: object, value: Any) -> None:
        if value is not UNSET:
            _STORAGE_TTL(self, attribute, value)

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
        TypeError: ``query_fn``, a callback or ``cache_if`` is not callable, or
            ``query_fn`` requires arguments (it is called with none; a callable
            whose signature cannot be read is accepted); a ``retry`` function
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
    query_fn: Callable[[], Any] = attrs.field(validator=_check_query_fn)
    """Loads the value: awaited if async, else run in a worker thread."""
    stale_time: float | Callable[[Any], float] | None = attrs.field(
        default=None,
        validator=number_or_function("stale_time", _seconds("stale_time", allow_none=True), "data"),
    )
    """Seconds data stays fresh, or ``stale_time(data) -> float`` computed when data lands."""
    gc_time: float | None = attrs.field(
        default=None, validator=_seconds("gc_time", allow_none=True)
    )
    retry: RetryPolicy | None = attrs.field(default=None, validator=_retry_count)
    """Retries after a failed attempt, or ``retry(failure_count, error) -> bool``."""
    retry_delay: RetryDelaySpec | None = attrs.field(default=None, validator=_retry_delay)
    """Seconds before a retry: a number, ``f(failure_count)`` or ``f(failure_count, error)``."""
    enabled: bool = attrs.field(default=True, validator=_flag("enabled", allow_none=False))
    """``False``: observers never fetch by themselves (``fetch_query`` still does)."""
    refetch_interval: float | Callable[[Any], float | None] | None = attrs.field(
        default=None,
        validator=number_or_function(
            "refetch_interval",
            _seconds("refetch_interval", allow_none=True, allow_zero=False),
            "state",
        ),
    )
    """Seconds between refetches while the key has observers, or
    ``refetch_interval(state) -> float | None`` (``None``: stop polling), asked at each tick."""
    select: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=_optional_callable("select")
    )
    """Maps the data an observer's listeners see; applied per observer."""
    placeholder_data: Any = UNSET
    """Shown to observers while the key is pending; never cached, never returned by fetch_query."""
    initial_data: Any = UNSET
    """Cached as if fetched when the key is first created (a value or a no-argument function)."""
    initial_data_updated_at: float | None = attrs.field(
        default=None,
        validator=_seconds("initial_data_updated_at", allow_none=True, allow_inf=False),
    )
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
    single_flight: bool | None = attrs.field(
        default=None, validator=_flag("single_flight", allow_none=True)
    )
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
    jitter: float | None = attrs.field(default=None, validator=check_jitter(allow_none=True))
    """Spread of each fresh period, a fraction in [0, 1); ``None``: the client's."""
    error_ttl: float | None = attrs.field(
        default=None, validator=_seconds("error_ttl", allow_none=True, allow_zero=False)
    )
    """Seconds a failed fetch's error is remembered: a read in that window gets the error
    (or the stale data) without an origin call; ``invalidate_queries`` forgets it."""
    cache_if: Callable[[Any], object] | None = attrs.field(
        default=None, validator=_optional_callable("cache_if")
    )
    """``cache_if(value)``: a fetched value it is false for goes to the fetch's waiters but is
    not cached (not in L1, not in L2); ``None``: every value is cached."""
    max_stale: float | None = attrs.field(
        default=None, validator=_seconds("max_stale", allow_none=True)
    )
    """Seconds data may be served stale after it went stale (its computed, jittered stale
    time counted); past it the caller waits for a new fetch.  ``None``: no such bound."""
    retry_rule: RetryRule = attrs.field(init=False, repr=False, eq=False)
    """``retry`` and ``retry_delay`` compiled (a function's arity decided once)."""

    def __attrs_post_init__(self) -> None:
        key, key_hash = canonical_key(self.query_key)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "key_hash", key_hash)
        object.__setattr__(self, "is_async", is_async_callable(self.query_fn))
        object.__setattr__(self, "retry_rule", RetryRule.of(self.retry, self.retry_delay))
