"""Warm restarts: the L1 cache as a plain dict, and back.

:func:`dehydrate` turns the client's successful queries into a dict that a
daemon can save on shutdown (with the default json serializer it is JSON-safe:
``json.dumps`` takes it as is); :func:`hydrate` loads such a dict into a new
client, so that it starts warm::

    {"version": 1, "serializer": "json", "encoding": "json",
     "queries": [{"key": ["user", 42], "key_hash": "[\\"user\\",42]",
                  "data": {"name": "Ada"}, "data_updated_at": 1712345678.25,
                  "is_invalidated": false}]}

Values go through the client's serializer, as they would to L2: with the json
serializer ``data`` is the JSON value itself (``encoding`` ``"json"``); with
any other it is the base64 text of the serializer's bytes (``"base64"``).
Times are wall-clock seconds, so they mean the same in the next process.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import attrs
import orjson

from ._keys import QueryKey, canonical_key
from ._state import QueryState, QueryStatus, Snapshot
from .serializers._core import SerializationError, Serializer
from .serializers._json import JsonSerializer

#: The version of the dict :func:`dehydrate` writes and :func:`hydrate` reads.
DEHYDRATED_VERSION: Final = 1

DehydratePredicate = Callable[[QueryKey, QueryState[Any]], bool]


class HydrationTarget(Protocol):
    """What :func:`hydrate` loads into: the query client's public methods it calls."""

    def get_query_state(self, key: QueryKey) -> QueryState[Any] | None: ...

    async def set_query_data(
        self, key: QueryKey, updater: Any, *, updated_at: float | None = None
    ) -> Any: ...

    async def invalidate_queries(self, key: QueryKey = (), *, exact: bool = False) -> int: ...


def _default_predicate(_key: QueryKey, state: QueryState[Any]) -> bool:
    return state.status is QueryStatus.SUCCESS


def dehydrate(
    snapshots: Mapping[str, Snapshot],
    serializer: Serializer,
    predicate: DehydratePredicate | None = None,
) -> dict[str, Any]:
    """Return the snapshots' data as a dict a new client can :func:`hydrate` from.

    Takes every key with data for which ``predicate(key, state)`` is true (by
    default: every key whose status is ``success``).  Values go through
    ``serializer``; with the default json serializer the dict is JSON-safe,
    with another one each value is the base64 text of its bytes.

    Raises:
        SerializationError: a value the serializer cannot encode (the message
            names its key); exclude it with ``predicate``.
    """
    as_json = isinstance(serializer, JsonSerializer)
    keep = predicate if predicate is not None else _default_predicate
    queries = []
    for key_hash, snap in list(snapshots.items()):
        state = snap.state
        if not state.has_data or not keep(snap.key, state):
            continue
        try:
            raw = serializer.dumps(state.data)
        except Exception as exc:
            raise SerializationError(
                f"query {snap.key!r}: {exc}",
                serializer=serializer.name,
                value_type=type(state.data).__qualname__,
            ) from exc
        queries.append(
            {
                "key": _to_json_key(snap.key),
                "key_hash": key_hash,
                "data": orjson.loads(raw) if as_json else base64.b64encode(raw).decode("ascii"),
                "data_updated_at": state.data_updated_at,
                "is_invalidated": state.is_invalidated,
            }
        )
    return {
        "version": DEHYDRATED_VERSION,
        "serializer": serializer.name,
        "encoding": "json" if as_json else "base64",
        "queries": queries,
    }


@attrs.frozen
class _Entry:
    key: QueryKey
    data: Any
    data_updated_at: float
    is_invalidated: bool


class _NotNewer(Exception):
    """The key already holds data as new as the entry's: leave it alone."""


async def hydrate(client: HydrationTarget, dehydrated: object, serializer: Serializer) -> int:
    """Load a dict made by :func:`dehydrate` into ``client``; return how many keys were loaded.

    A key that already holds data as new as the saved data (by
    ``data_updated_at``) is left alone, also when a fetch lands while
    hydrating.  Loaded data counts as fetched at its saved time, so it is
    fresh for a query whose ``stale_time`` has not passed since; saved
    invalidations are kept (observed keys refetch).  Loaded data is written
    to L2 like data set with ``set_query_data``.  The whole dict is checked
    before anything is loaded: a bad one changes nothing.  Cancelled, the
    keys loaded so far stay loaded.

    Raises:
        TypeError: ``dehydrated`` is not a dict.
        ValueError: ``dehydrated`` is malformed (another version or
            serializer, a missing field, an invalid key, data that cannot be
            decoded); the message names what and where.
    """
    entries = _parse(dehydrated, serializer)
    count = 0
    for entry in entries:

        def keep_newer(old: Any, entry: _Entry = entry) -> Any:
            # Runs where the key's state is changed (its actor, if it has
            # one), so a fetch landing meanwhile is seen and never overwritten.
            state = client.get_query_state(entry.key)
            held = state.data_updated_at if state is not None else None
            if held is not None and held >= entry.data_updated_at:
                raise _NotNewer
            return entry.data

        try:
            await client.set_query_data(entry.key, keep_newer, updated_at=entry.data_updated_at)
        except _NotNewer:
            continue
        count += 1
        if entry.is_invalidated:
            await client.invalidate_queries(entry.key, exact=True)
    return count


def _parse(dehydrated: object, serializer: Serializer) -> list[_Entry]:
    """Check the whole dict before anything is loaded, so a bad one changes nothing."""
    if not isinstance(dehydrated, Mapping):
        raise TypeError(
            f"dehydrated state must be a dict, got {type(dehydrated).__name__}: {dehydrated!r}"
        )
    version = dehydrated.get("version")
    if version != DEHYDRATED_VERSION or isinstance(version, bool):
        raise ValueError(
            f"dehydrated state has version {version!r}; this stackquery reads "
            f"version {DEHYDRATED_VERSION}"
        )
    name = dehydrated.get("serializer")
    if name != serializer.name:
        raise ValueError(
            f"dehydrated state was written with serializer {name!r}, "
            f"but this client uses {serializer.name!r}"
        )
    encoding = dehydrated.get("encoding")
    expected = "json" if isinstance(serializer, JsonSerializer) else "base64"
    if encoding != expected:
        raise ValueError(
            f"dehydrated state has encoding {encoding!r}; serializer {serializer.name!r} "
            f"needs {expected!r}"
        )
    queries = dehydrated.get("queries")
    if not isinstance(queries, list):
        raise ValueError(f"dehydrated state: queries must be a list, got {type(queries).__name__}")
    return [_parse_entry(i, q, serializer, expected) for i, q in enumerate(queries)]


def _parse_entry(index: int, query: object, serializer: Serializer, encoding: str) -> _Entry:
    where = f"dehydrated state: queries[{index}]"
    if not isinstance(query, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(query).__name__}")
    missing = [f for f in ("key", "data", "data_updated_at", "is_invalidated") if f not in query]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    try:
        key, key_hash = canonical_key(_from_json_key(query["key"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.key is not a valid query key: {exc}") from exc
    if "key_hash" in query and query["key_hash"] != key_hash:
        raise ValueError(
            f"{where}.key_hash {query['key_hash']!r} does not match its key (hash {key_hash!r})"
        )
    updated = query["data_updated_at"]
    if (
        isinstance(updated, bool)
        or not isinstance(updated, int | float)
        or not math.isfinite(updated)
    ):
        raise ValueError(f"{where}.data_updated_at must be a finite number, got {updated!r}")
    invalidated = query["is_invalidated"]
    if not isinstance(invalidated, bool):
        raise ValueError(f"{where}.is_invalidated must be a bool, got {invalidated!r}")
    data = query["data"]
    try:
        if encoding == "json":
            value = serializer.loads(orjson.dumps(data))
        else:
            if not isinstance(data, str):
                raise ValueError(f"base64 text expected, got {type(data).__name__}")
            value = serializer.loads(base64.b64decode(data, validate=True))
    except (TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"{where}.data cannot be decoded: {exc}") from exc
    return _Entry(key, value, float(updated), invalidated)


def _to_json_key(key: Any) -> Any:
    if isinstance(key, tuple):
        return [_to_json_key(k) for k in key]
    if isinstance(key, dict):
        return {k: _to_json_key(v) for k, v in key.items()}
    return key


def _from_json_key(key: Any) -> Any:
    """JSON has no tuples: the lists of a saved key are its tuples."""
    if isinstance(key, list | tuple):
        return tuple(_from_json_key(k) for k in key)
    if isinstance(key, dict):
        return {k: _from_json_key(v) for k, v in key.items()}
    return key
