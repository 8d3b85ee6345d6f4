"""QueryDefaults: options registered for every query under a key prefix.

``client.set_query_defaults(("todos",), stale_time=60.0)`` gives every query
whose key starts with ``("todos",)`` a ``stale_time`` of 60 s, unless the
query sets one itself.  "Sets" means the option holds anything but its
"not given" value (``None``, or ``UNSET`` for ``initial_data`` and
``placeholder_data``): a query's ``None`` already meant "the client's
value", and a prefix's default now comes between the two.  ``enabled``
(a ``bool`` whose default is a value) and the key and function of a query
cannot be defaults.

Every matching prefix contributes, the longer (more specific) prefix
winning per option, whatever the order of registration.  (TanStack Query
merges in registration order and asks users to register the generic prefix
first; here the order cannot be got wrong.)  Registering a prefix again
replaces what it had; registering it with no options removes it.

Options are resolved where a query enters the client (``fetch_query`` once
its fresh-hit test missed, ``prefetch_query``, ``watch``,
``ensure_query_data``, ``fetch_queries``), and the resolved options are
memoized on the options object itself, so that a fresh hit of a query whose
``stale_time`` came from a default stays a lookup and an identity test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from ._errors import InvalidOptionError
from ._keys import QueryKey, canonical_key, hash_matches, prefix_hash
from ._option_checks import UNSET
from ._options import QueryOptions

_REFUSED: Final[Mapping[str, str]] = {
    "query_key": "query_key names the query; it cannot be a default",
    "query_fn": "query_fn cannot be a default: every QueryOptions has its own",
    "enabled": (
        "enabled cannot be a default: a query's enabled=True could not be told from "
        "one left unset; set enabled on the queries"
    ),
}


def _defaultable() -> dict[str, object]:
    """Each option that may have a default, with the value that means "not given"."""
    return {
        field.name: field.default
        for field in attrs.fields(QueryOptions)
        if field.init
        and field.name not in _REFUSED
        and (field.default is None or field.default is UNSET)
    }


async def _probe_fn() -> None:  # pragma: no cover - never called: it only validates
    return None


@attrs.frozen
class _Registered:
    prefix: QueryKey
    prefix_hash: str
    options: Mapping[str, Any]


class QueryDefaults:
    """The option defaults of one client, by key prefix."""

    def __init__(self) -> None:
        self._unset = _defaultable()
        self._by_prefix: dict[str, _Registered] = {}
        self._ordered: list[_Registered] = []
        """``_by_prefix`` from the shortest prefix to the longest (the most specific last)."""
        self._version = object()
        """Replaced on every change: a memo made under another version is stale."""
        self.any_set = False
        """Whether any prefix has defaults: an attribute, not ``__bool__``, because every
        read that is not a fresh hit asks, and a Python ``__bool__`` is a call."""

    def __bool__(self) -> bool:
        return self.any_set

    def set(self, prefix: QueryKey, options: Mapping[str, Any]) -> None:
        """Register ``options`` for every key under ``prefix`` (none: forget the prefix).

        Raises:
            InvalidKeyError: ``prefix`` is not a valid key.
            InvalidOptionError: an option that cannot be a default, or is unknown.
            TypeError, InvalidOptionError: a value ``QueryOptions`` would refuse
                (the same message).
        """
        key, _ = canonical_key(prefix)
        for name in options:
            if name in _REFUSED:
                raise InvalidOptionError(_REFUSED[name])
            if name not in self._unset:
                known = ", ".join(sorted(self._unset))
                raise InvalidOptionError(
                    f"{name!r} is not a query option; defaults may set {known}"
                )
        # Validated as QueryOptions validates them, with its messages.
        QueryOptions(query_key=key, query_fn=_probe_fn, **options)
        text = prefix_hash(key)
        if options:
            self._by_prefix[text] = _Registered(key, text, dict(options))
        else:
            self._by_prefix.pop(text, None)
        self._ordered = sorted(self._by_prefix.values(), key=lambda r: len(r.prefix_hash))
        self.any_set = bool(self._by_prefix)
        self._version = object()

    def get(self, key: QueryKey) -> dict[str, Any]:
        """The defaults a query with ``key`` gets: every matching prefix's, merged.

        Raises:
            InvalidKeyError: ``key`` is not a valid key.
        """
        return self._for_hash(canonical_key(key)[1])

    def _for_hash(self, key_hash: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for registered in self._ordered:
            if hash_matches(key_hash, registered.prefix_hash, exact=False):
                merged.update(registered.options)
        return merged

    def resolve(self, options: QueryOptions[Any]) -> QueryOptions[Any]:
        """``options`` with the defaults of its key filled into the options it leaves unset.

        Returns ``options`` itself when no default applies.  Memoized on
        ``options`` (until the defaults change): a second call allocates nothing.
        """
        if not self._by_prefix:
            return options
        memo = options.defaults_memo
        if memo is not None and memo[0] is self._version:
            return memo[1]  # type: ignore[no-any-return]
        unset = self._unset
        fill = {
            name: value
            for name, value in self._for_hash(options.key_hash).items()
            if getattr(options, name) is unset[name]
        }
        resolved = attrs.evolve(options, **fill) if fill else options
        memo = (self._version, resolved)
        # The options are frozen for users; this slot is the client's cache.
        object.__setattr__(options, "defaults_memo", memo)
        object.__setattr__(resolved, "defaults_memo", memo)
        return resolved


__all__ = ["QueryDefaults"]
