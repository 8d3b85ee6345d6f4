"""Checks of caller input shared by every backend: keys, values, TTLs.

Bad input is the caller's bug, not a storage failure, so these raise
``TypeError`` / ``ValueError`` at the call that made it, before any I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def check_key(key: object) -> str:
    """Return ``key`` if it is usable as a storage key.

    Raises:
        TypeError: ``key`` is not a ``str``.
        ValueError: ``key`` is not valid Unicode text (it holds a lone surrogate),
            so it cannot be encoded as UTF-8.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"key must be valid unicode text, got {key!r}") from None
    return key


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is usable as a key prefix (same rules as a key).

    Raises:
        TypeError: ``prefix`` is not a ``str``.
        ValueError: ``prefix`` holds a lone surrogate.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
    return check_key(prefix)


def check_keys(keys: object) -> list[str]:
    """Return ``keys`` as a list after checking each key.

    Raises:
        TypeError: ``keys`` is a ``str`` (almost always a mistake for ``[key]``)
            or not a sequence, or one of its items is not a ``str``.
        ValueError: a key holds a lone surrogate.
    """
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
        raise TypeError(f"keys must be a sequence of str, not {type(keys).__name__}")
    try:
        # All ASCII str (the common case, a batch of hashes) is judged in C: a
        # key that is not a str makes str.isascii raise, and goes the slow way.
        if all(map(str.isascii, keys)):
            return list(keys)
    except TypeError:
        pass
    return [check_key(key) for key in keys]


_BYTES_OR_NONE = frozenset({bytes, type(None)})


def all_bytes_or_none(values: Iterable[object]) -> bool:
    """Whether every one of ``values`` (read from a store) is ``bytes`` or ``None`` exactly,
    to be taken as it is; judged in C."""
    return _BYTES_OR_NONE.issuperset(map(type, values))


def check_value(value: object) -> bytes:
    """Return ``value`` if it is storable.

    Raises:
        TypeError: ``value`` is not ``bytes``.
    """
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return value


def check_items(items: object) -> dict[str, bytes]:
    """Return ``items`` as a dict after checking every key and value.

    Raises:
        TypeError: ``items`` is not a mapping, or a key is not ``str``, or a value
            is not ``bytes``.
        ValueError: a key holds a lone surrogate.
    """
    if not isinstance(items, Mapping):
        raise TypeError(f"items must be a mapping of str to bytes, not {type(items).__name__}")
    return {check_key(key): check_value(value) for key, value in items.items()}


def check_ttl(ttl: object) -> float | None:
    """Return ``ttl`` (seconds) if it is ``None`` or a positive finite number.

    Zero is refused rather than read as "forever" or "already expired": both
    readings exist in other caches, so neither would be unsurprising.

    Raises:
        TypeError: ``ttl`` is not ``None``, an ``int`` or a ``float`` (``bool``
            is refused too).
        ValueError: ``ttl`` is zero, negative, infinite or NaN.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be None or a number of seconds, not {type(ttl).__name__}")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be None or a positive finite number of seconds, got {ttl!r}")
    return float(ttl)
