"""Query keys: validation and the canonical hash they are stored under."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from ._errors import InvalidKeyError

QueryKey = tuple[Any, ...]
"""A query key as users write it: a tuple such as ``("user", 42)``."""

_ORJSON_INTS = range(-(2**63), 2**64)
"""The ints orjson writes itself; any other is written as its digits by us."""


def canonical_key(key: object) -> tuple[QueryKey, str]:
    """Validate ``key`` and return it with its canonical hash.

    The hash is compact JSON of the key with dict keys sorted and every
    integral float written as its int, at any magnitude: ``("u", 1)`` and
    ``("u", 1.0)`` are one key, and so are ``("u", 2**63)`` and
    ``("u", 2.0**63)``, as they are equal in Python.  Ints of any size are
    written as their decimal digits.  ``("u", True)`` and ``("u", 1)`` are
    two keys (``True == 1`` in Python, but a user who wrote a flag did not
    mean a count), and a non-finite float is refused (``nan`` equals
    nothing, not even itself; ``inf`` has no int to be).  The hash is the L1
    table's key and, behind the client's ``key_prefix``, the L2 key.

    Every key accepted before integral floats past 2**63 were made ints
    hashes as it did then, so entries already in L2 are found; only a key
    holding such a float hashes differently now (as its int, with which it
    used to be split): its old entries are misses, refetched once.

    Raises:
        InvalidKeyError: ``key`` is not a tuple, or holds an element that is not
            a str, int, finite float, bool, None, tuple or str-keyed dict, or
            one that cannot be encoded (a lone surrogate, an int past Python's
            int-to-str digit limit).
    """
    if not isinstance(key, tuple):
        raise InvalidKeyError(f"query key must be a tuple, got {type(key).__name__}: {_show(key)}")
    wide: list[int] = []
    normal = _normalize(key, key, wide)
    encodable = _with_digits(normal) if wide else normal
    try:
        text = orjson.dumps(encodable, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # a lone surrogate
        raise InvalidKeyError(f"query key {_show(key)} cannot be encoded: {exc}") from None
    return normal, text.decode()


def _normalize(value: object, whole: QueryKey, wide: list[int]) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return _int(int(value), whole, wide)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidKeyError(f"query key {_show(whole)} holds a non-finite float {value!r}")
        return _int(int(value), whole, wide) if value.is_integer() else value
    if isinstance(value, tuple):
        items = [_normalize(v, whole, wide) for v in value]
        for item, original in zip(items, value, strict=True):
            if item is not original:
                return tuple(items)
        # Already canonical: the caller's own tuple, so that options keep one, not two.
        return value
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise InvalidKeyError(
                    f"query key {_show(whole)} holds a dict with a non-str key {k!r}"
                )
        return {k: _normalize(v, whole, wide) for k, v in value.items()}
    if isinstance(value, list):
        raise InvalidKeyError(
            f"query key {_show(whole)} holds a list; use a tuple, which is hashable"
        )
    raise InvalidKeyError(
        f"query key {_show(whole)} holds a {type(value).__name__} ({value!r}); "
        "keys hold str, int, float, bool, None, tuples and str-keyed dicts"
    )


def _int(value: int, whole: QueryKey, wide: list[int]) -> int:
    if value not in _ORJSON_INTS:
        try:
            str(value)
        except ValueError:  # past sys.get_int_max_str_digits()
            raise InvalidKeyError(
                f"query key holds an int too long to write ({value.bit_length()} bits)"
            ) from None
        wide.append(value)
    return value


def _with_digits(value: Any) -> Any:
    """``value`` with every int orjson cannot write replaced by its digits, as raw JSON."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value in _ORJSON_INTS else orjson.Fragment(str(value).encode())
    if isinstance(value, tuple):
        return tuple(_with_digits(v) for v in value)
    if isinstance(value, dict):
        return {k: _with_digits(v) for k, v in value.items()}
    return value


def _show(key: object) -> str:
    try:
        return repr(key)
    except ValueError:  # an int too long to print
        return f"<{type(key).__name__} that cannot be printed>"


def prefix_hash(prefix: QueryKey) -> str:
    """Return the text every hash of a key starting with ``prefix`` begins with.

    Canonical JSON makes tuple-prefix matching a text-prefix test: the hash
    of ``("user",)`` is ``["user"]``, and every key under it hashes to
    ``["user"`` followed by ``,`` or ``]``.

    Raises:
        InvalidKeyError: ``prefix`` is not a valid key.
    """
    _, text = canonical_key(prefix)
    return text[:-1]


def hash_matches(key_hash: str, prefix: str, *, exact: bool) -> bool:
    """Whether ``key_hash`` is the key of ``prefix`` (``exact``) or starts with it."""
    if len(prefix) == 1:  # the empty key "[": every key matches unless exact
        return key_hash == "[]" if exact else True
    if not key_hash.startswith(prefix):
        return False
    rest = key_hash[len(prefix)]
    return rest == "]" if exact else rest in ",]"


def key_from_hash(key_hash: str) -> QueryKey:
    """The canonical key whose hash is ``key_hash`` (JSON lists are the key's tuples).

    A canonical hash holds no integral float, so one that orjson hands back
    is an int past 64 bits it rounded: the hash is then read again by the
    standard library's parser, which keeps every int exact.
    """
    rounded: list[float] = []
    key: QueryKey = _tuples(orjson.loads(key_hash), rounded)
    if rounded:
        key = _tuples(json.loads(key_hash), [])
    return key


def _tuples(value: Any, rounded: list[float]) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v, rounded) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v, rounded) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        rounded.append(value)
    return value
