"""Call any store the same way, whichever optional operations it has.

The query client talks to L2 only through these functions, so a store that
implements just ``get`` / ``set`` / ``delete`` (or returns ``str``, as
PyStackQuery's stores do) works as well as one with batch operations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import trio

from ._base import ByteStore
from ._concurrency import gather_limited
from ._errors import StorageError, StorageUnsupportedError
from ._protocol import StorageBackend
from ._validation import all_bytes_or_none, check_items, check_keys, check_prefix, check_ttl

_FALLBACK_CONCURRENCY = 16
"""Single-key calls in flight at once when a store has no batch operation."""

Reading = tuple[bytes | None, float | None]


def as_bytes(value: bytes | str | None) -> bytes | None:
    """Return a value read from a store as ``bytes`` (``None`` stays ``None``).

    A ``str`` is encoded as UTF-8; a ``bytearray`` or ``memoryview`` is copied
    into ``bytes``.

    Raises:
        StorageError: ``value`` is of another type (the store misbehaved).
    """
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise StorageError(
        f"a store returned {type(value).__name__}; expected bytes, str or None",
        operation="get",
    )


async def get(store: StorageBackend, key: str) -> bytes | None:
    """Return ``store.get(key)`` as ``bytes``.

    Raises:
        Whatever ``store.get`` raises; StorageError if it returns a non-text value.
    """
    return as_bytes(await store.get(key))


async def get_many(store: StorageBackend, keys: Sequence[str]) -> list[bytes | None]:
    """Return one value per key, in order, with the store's ``get_many`` if it has one.

    Without ``get_many``, the keys are read with ``get``, several at a time.

    Raises:
        TypeError: ``keys`` is a ``str`` or not a sequence of ``str``.
        ValueError: a key holds a lone surrogate.
        StorageError: the store returned the wrong number of values, or a
            non-text value; anything the store raises propagates as is.
    """
    checked = _checked_keys(store, keys)
    batch = getattr(store, "get_many", None)
    if batch is not None:
        values: Sequence[bytes | str | None] = await batch(checked)
        _check_count(store, "get_many", checked, values)
        if type(values) is list and all_bytes_or_none(values):
            # Each bytes or None already (judged in C): a copy of the list, not of each.
            return list(values)
        return [as_bytes(value) for value in values]
    return await gather_limited(
        [partial(get, store, key) for key in checked], max_concurrency=_FALLBACK_CONCURRENCY
    )


async def set_many(
    store: StorageBackend, items: Mapping[str, bytes], ttl: float | None = None
) -> None:
    """Store every item with ``ttl``, with the store's ``set_many`` if it has one.

    Without ``set_many``, the items are written with ``set``, several at a time;
    if one fails, others may have been written.

    Raises:
        TypeError: ``items`` is not a mapping of ``str`` to ``bytes``, or ``ttl``
            is not a number.
        ValueError: ``ttl`` is not positive and finite, or a key holds a lone
            surrogate.
        Anything the store raises, as is.
    """
    checked = check_items(items)
    checked_ttl = check_ttl(ttl)
    batch = getattr(store, "set_many", None)
    if batch is not None:
        await batch(checked, checked_ttl)
        return
    await gather_limited(
        [partial(store.set, key, value, checked_ttl) for key, value in checked.items()],
        max_concurrency=_FALLBACK_CONCURRENCY,
    )


async def delete_prefix(store: StorageBackend, prefix: str) -> int:
    """Remove every key of ``store`` that starts with ``prefix``; return how many.

    Raises:
        TypeError: ``prefix`` is not a ``str``.
        ValueError: ``prefix`` holds a lone surrogate.
        StorageUnsupportedError: the store has no ``delete_prefix``.
        Anything the store raises, as is.
    """
    checked = check_prefix(prefix)
    method = getattr(store, "delete_prefix", None)
    if method is None:
        name = type(store).__name__
        raise StorageUnsupportedError(
            f"{name} has no delete_prefix", backend=name, operation="delete_prefix"
        )
    removed: int = await method(checked)
    return removed


def stores_within(store: object) -> list[object]:
    """Return ``store`` and every store it wraps, outermost first, depth first.

    Wrappers name the stores they wrap in an ``inner_stores`` attribute (see
    :class:`StorageBackend`); a store without one wraps nothing.  A store
    reached twice is listed once.
    """
    found: list[object] = []
    seen: set[int] = set()
    pending = [store]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        inner = getattr(current, "inner_stores", ())
        pending.extend(reversed(tuple(inner)))
    return found


def reports_ttl(store: object) -> bool:
    """Return whether ``store`` can tell the remaining TTL of what it returns.

    A store says so with a ``reports_ttl`` attribute when it has one (a wrapper
    answers for what it wraps); otherwise, by having ``get_with_ttl`` or
    ``get_many_with_ttl``.
    """
    declared = getattr(store, "reports_ttl", None)
    if isinstance(declared, bool):
        return declared
    return hasattr(store, "get_many_with_ttl") or hasattr(store, "get_with_ttl")


async def get_many_with_ttl(store: StorageBackend, keys: Sequence[str]) -> list[Reading]:
    """Return one ``(value, seconds left)`` pair per key, in order.

    Uses the store's ``get_many_with_ttl``, else its ``get_with_ttl`` per key,
    else ``get_many`` with every TTL reported as ``None`` — check
    :func:`reports_ttl` to tell "no expiry" from "unknown".

    Raises:
        Same as :func:`get_many`.
    """
    checked = _checked_keys(store, keys)
    batch = getattr(store, "get_many_with_ttl", None)
    if batch is not None:
        readings: Sequence[tuple[bytes | str | None, float | None]] = await batch(checked)
        _check_count(store, "get_many_with_ttl", checked, readings)
        return [(as_bytes(value), ttl) for value, ttl in readings]
    single = getattr(store, "get_with_ttl", None)
    if single is not None:
        return await gather_limited(
            [partial(_get_with_ttl, single, key) for key in checked],
            max_concurrency=_FALLBACK_CONCURRENCY,
        )
    return [(value, None) for value in await get_many(store, checked)]


async def aclose(store: StorageBackend) -> None:
    """Close ``store`` if it has ``aclose``; otherwise do nothing (but checkpoint).

    Raises:
        Anything the store's ``aclose`` raises, as is.
    """
    method = getattr(store, "aclose", None)
    if method is None:
        await trio.lowlevel.checkpoint()
        return
    await method()


def _checked_keys(store: StorageBackend, keys: Sequence[str]) -> Sequence[str]:
    """``keys`` checked (:func:`check_keys`), or as they are for a store of this package.

    A :class:`ByteStore` checks the keys of each of its methods itself, before any
    I/O, with the same :func:`check_keys`: checked here too, the 10,000 keys of a
    batch read were judged and copied twice.
    """
    return keys if isinstance(store, ByteStore) else check_keys(keys)


async def _get_with_ttl(method: Any, key: str) -> Reading:
    value, ttl = await method(key)
    return (as_bytes(value), ttl)


def _check_count(
    store: StorageBackend, operation: str, keys: Sequence[str], values: Sequence[object]
) -> None:
    if len(values) != len(keys):
        name = type(store).__name__
        raise StorageError(
            f"{name}.{operation} returned {len(values)} values for {len(keys)} keys",
            backend=name,
            operation=operation,
        )
