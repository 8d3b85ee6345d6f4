"""Query keys: validation and the canonical hash they are stored under."""

from __future__ import annotations

import math
from typing import Any

import orjson

from ._errors import InvalidKeyError

QueryKey = tuple[Any, ...]
"""A query key as users write it: a tuple such as ``("user", 42)``."""


def canonical_key(key: object) -> tuple[QueryKey, str]:
    """Validate ``key`` and return it with its canonical hash.

    The hash is compact JSON of the key with dict keys sorted and integral
    floats written as ints, so ``("u", 1)`` and ``("u", 1.0)`` are one key
    (they are equal in Python) while ``("u", True)`` and ``("u", 1)`` are two
    (``True == 1`` in Python, but a user who wrote a flag did not mean a
    count).  The hash is the L1 table's key and, behind the client's
    ``key_prefix``, the L2 key.

    Raises:
        InvalidKeyError: ``key`` is not a tuple, or holds an element that is not
            a str, int, finite float, bool, None, tuple or str-keyed dict, or
            one that cannot be encoded (an int past 64 bits, a lone surrogate).
    """
    if not isinstance(key, tuple):
        raise InvalidKeyError(f"query key must be a tuple, got {type(key).__name__}: {key!r}")
    normal = _normalize(key, key)
    try:
        text = orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # an int past 64 bits, a lone surrogate
        raise InvalidKeyError(f"query key {key!r} cannot be encoded: {exc}") from None
    return normal, text.decode()


def _normalize(value: object, whole: QueryKey) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidKeyError(f"query key {whole!r} holds a non-finite float {value!r}")
        # Past 2**63 an integral float stays a float: as an int it could not be encoded.
        return int(value) if value.is_integer() and abs(value) < 2.0**63 else value
    if isinstance(value, tuple):
        return tuple(_normalize(v, whole) for v in value)
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise InvalidKeyError(f"query key {whole!r} holds a dict with a non-str key {k!r}")
        return {k: _normalize(v, whole) for k, v in value.items()}
    if isinstance(value, list):
        raise InvalidKeyError(f"query key {whole!r} holds a list; use a tuple, which is hashable")
    raise InvalidKeyError(
        f"query key {whole!r} holds a {type(value).__name__} ({value!r}); "
        "keys hold str, int, float, bool, None, tuples and str-keyed dicts"
    )


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
    """The canonical key whose hash is ``key_hash`` (JSON lists are the key's tuples)."""
    key: QueryKey = _tuples(orjson.loads(key_hash))
    return key


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value
