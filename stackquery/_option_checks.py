"""The checks behind QueryClientConfig and QueryOptions: each validator names what was wrong."""

from __future__ import annotations

import functools
import inspect
import math
import os
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, Final

from actors import RestartIntensity

from ._errors import InvalidOptionError
from ._retry_policy import check_retry, delay_arity
from .serializers import as_serializer


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


def seconds(
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


def retries(*, allow_none: bool) -> Any:
    return check_retry(allow_none=allow_none)


retry_count = retries(allow_none=True)
"""``retry`` of a query or mutation: ``None`` takes the client's."""


def flag(name: str, *, allow_none: bool) -> Any:
    """A validator of a ``bool`` (or ``None``): a truthy stand-in would be read silently."""
    allowed = "True, False or None" if allow_none else "True or False"

    def check(_instance: object, _attribute: object, value: object) -> None:
        if not (isinstance(value, bool) or (value is None and allow_none)):
            raise InvalidOptionError(f"{name} must be {allowed}, got {_got(value)}")

    return check


def positive_int(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"{name} must be an int >= 1, got {value!r}")

    return check


def optional_callable(name: str) -> Any:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable, got {_got(value)}")

    return check


def delays(*, allow_none: bool) -> Any:
    check_seconds = seconds(
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
        check_seconds(instance, attribute, value)

    return check


checked_retry_delay = delays(allow_none=True)
"""``retry_delay`` of a query or mutation: ``None`` takes the client's."""

_STORE_URL_SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "redis+cluster://",
    "rediss+cluster://",
)
_SERIALIZER_NAMES: Mapping[str, str] = {
    "json": "stackquery.serializers.json",
    "msgpack": "stackquery.serializers.msgpack",
    "pickle": "stackquery.serializers.pickle(key=...)",
}


def check_storage(_instance: object, _attribute: object, value: object) -> None:
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
    # Neither Redis client is imported for this: a RedisClient exists only if its module
    # was imported; a redis-py asyncio client is told by its module.
    redis_client = sys.modules.get("backends._redis_client")
    ours = redis_client is not None and isinstance(value, redis_client.RedisClient)
    if ours or type(value).__module__.startswith("redis.asyncio."):
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


def check_serializer(_instance: object, _attribute: object, value: object) -> None:
    if value is None:
        return
    if isinstance(value, str):
        fix = _SERIALIZER_NAMES.get(value, "an object with dumps and loads")
        raise InvalidOptionError(f"serializer must be a serializer, got {_got(value)}; use {fix}")
    try:
        as_serializer(value)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(f"serializer is not usable: {exc}") from exc


def check_key_prefix(_instance: object, _attribute: object, value: object) -> None:
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


def check_admin_socket(_instance: object, _attribute: object, value: Any) -> None:
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


def check_restart_intensity(_instance: object, _attribute: object, value: object) -> None:
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


NO_META: Final[Mapping[str, Any]] = types.MappingProxyType({})
"""The ``meta`` of a query that has none: read-only, so one object serves them all."""


def check_meta(_instance: object, _attribute: object, value: object) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"meta must be a mapping, got {_got(value)}")


def check_query_fn(_instance: object, _attribute: object, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"query_fn must be callable, got {_got(value)}")
    unbound = _unbound_parameters(value)
    if not unbound or (len(unbound) == 1 and _takes_positional(value, unbound[0])):
        return
    if len(unbound) == 1:
        raise TypeError(
            f"query_fn {_callable_name(value)} requires {unbound[0]} as a keyword but is "
            "called with no arguments, or with its QueryContext as the one positional "
            "argument; bind it with functools.partial or a lambda"
        )
    raise TypeError(
        f"query_fn {_callable_name(value)} requires {', '.join(unbound)} but is called "
        "with no arguments, or with one (its QueryContext); bind them with "
        "functools.partial or a lambda"
    )


def takes_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a valid ``query_fn``) is called with a :class:`QueryContext`.

    It is when exactly one of its parameters has no value (no default, not
    bound by a partial) and that one may be passed positionally.
    """
    unbound = _unbound_parameters(fn)
    return len(unbound) == 1 and _takes_positional(fn, unbound[0])


def _takes_positional(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn``'s parameter ``name`` can be given as the call's one positional argument."""
    target: Any = fn
    bound_positional = 0
    if type(target) is functools.partial:  # as _unbound_parameters reads it
        bound_positional = len(target.args)
        target = target.func
    if isinstance(target, types.MethodType):
        bound_positional += 1
        target = target.__func__
    if isinstance(target, types.FunctionType):
        # The one positional argument fills the first parameter not bound positionally.
        code = target.__code__
        return bound_positional < code.co_argcount and code.co_varnames[bound_positional] == name
    try:
        parameter = inspect.signature(fn, follow_wrapped=False).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (
        parameter.POSITIONAL_ONLY,
        parameter.POSITIONAL_OR_KEYWORD,
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


STORAGE_TTL = seconds(
    "storage_ttl",
    allow_none=True,
    allow_zero=False,
    allow_inf=False,
    instead_of_inf="; use None for no expiry",
)
