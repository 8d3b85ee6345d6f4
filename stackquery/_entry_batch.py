"""Decoding the L2 entries of many keys read together (one ``get_many``).

The entries are those of :mod:`stackquery._entry`, decoded one by one as
:func:`~stackquery._entry.try_unpack_entry` would (a corrupt one is a miss,
handed to ``on_corrupt``), but with the common case, the JSON serializer's
text envelope, decoded inline and each raw entry let go of as soon as it is
decoded, so that a batch of 10,000 keys does not hold its raw bytes and its
values at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

from ._entry import FORMAT_VERSION, CorruptEntryError, StoredEntry, try_unpack_entry
from .serializers._core import Serializer
from .serializers._json import JsonSerializer


def unpack_entries(
    raws: list[bytes | None],
    serializer: Serializer,
    on_corrupt: Callable[[CorruptEntryError], object],
    prefix: str,
    keys: list[str],
) -> list[StoredEntry | None]:
    """:func:`try_unpack_entry` of each of ``raws`` (read under ``prefix`` + each of ``keys``).

    Each item of ``raws`` is set to ``None`` as it is decoded: with no other
    reference to it, its memory is freed for the value decoded next, rather
    than a batch of entries and their values in fresh memory at once.

    Raises:
        Exception: whatever ``on_corrupt`` raises; nothing else.
    """
    # One decoding loop for both forms: the plain entries unpack_batch keeps as value
    # and time become StoredEntry objects here, as try_unpack_entry would make them.
    batch = unpack_batch(raws, serializer, on_corrupt, prefix, keys)
    return [batch.entry(place) for place in range(len(keys))]


@attrs.define(eq=False)
class BatchEntries:
    """The entries of many keys read together (:func:`unpack_batch`), by place.

    Most entries of a batch are plain: the JSON serializer's text envelope,
    well formed and not invalidated.  Such an entry is kept as its value and
    time in two lists rather than as a :class:`StoredEntry` of its own (which
    costs more than the rest of its decoding); :meth:`entry` makes one on demand.
    """

    values: list[Any]
    """A plain entry's value at its place (``None`` elsewhere)."""
    times: list[float | None]
    """A plain entry's ``data_updated_at`` at its place; ``None``: not plain (see ``others``)."""
    others: dict[int, StoredEntry | None]
    """By place, the entries that are not plain; a place in neither is a miss."""

    @classmethod
    def missing(cls, count: int) -> BatchEntries:
        """``count`` misses."""
        return cls([None] * count, [None] * count, {})

    def entry(self, place: int) -> StoredEntry | None:
        """The entry at ``place``, or ``None`` (a miss)."""
        updated_at = self.times[place]
        if updated_at is None:
            return self.others.get(place)
        return StoredEntry(self.values[place], updated_at, False, JsonSerializer.name)

    def put(self, place: int, entry: StoredEntry | None) -> None:
        """Make ``entry`` (``None``: a miss) the entry at ``place``, whatever was there."""
        self.times[place] = None
        self.values[place] = None
        self.others[place] = entry

    def hits(self) -> int:
        """How many places hold an entry."""
        plain = len(self.times) - self.times.count(None)
        return plain + sum(entry is not None for entry in self.others.values())


def unpack_batch(
    raws: list[bytes | None],
    serializer: Serializer,
    on_corrupt: Callable[[CorruptEntryError], object],
    prefix: str,
    keys: list[str],
) -> BatchEntries:
    """:func:`unpack_entries` of ``raws``, kept as :class:`BatchEntries`.

    Each item of ``raws`` is set to ``None`` as it is decoded (see
    :func:`unpack_entries`).  An entry that is not plain is decoded as
    :func:`try_unpack_entry` decodes it (a corrupt one is a miss, handed to
    ``on_corrupt``).

    Raises:
        Exception: whatever ``on_corrupt`` raises; nothing else.
    """
    count = len(raws)
    values: list[Any] = [None] * count
    times: list[float | None] = [None] * count
    others: dict[int, StoredEntry | None] = {}
    plain = type(serializer) is JsonSerializer
    loads = orjson.loads
    # What shows an envelope is not plain, raised by the first step it fails: it does
    # not parse, it is no dict (any other value orjson makes, subscripted by a str,
    # raises TypeError), or a field is missing.
    not_plain = (orjson.JSONDecodeError, TypeError, KeyError)
    for index, raw in enumerate(raws):
        if raw is None:
            continue
        raws[index] = None
        if plain:
            # What plain_text_entry checks, inline (exactly what pack_entry writes) but
            # the count of fields: an envelope with one more decodes to the same entry on
            # try_unpack_entry's careful way, so it may as well be taken here.  Parsed
            # first: only a parsed envelope's first byte is looked at (then there is one),
            # and what does not parse (a binary frame, say) is try_unpack_entry's.
            # Subscripts, not get(): no method call each.
            try:
                envelope = loads(raw)
                t = envelope["t"]
                if (
                    type(t) is float
                    and t >= 0.0
                    and envelope["i"] is False
                    # The int 1 orjson makes is CPython's one cached 1: True, 1.0 (or a 1
                    # made otherwise) are not it, and go the careful way, which decides.
                    and envelope["sq"] is FORMAT_VERSION
                    and envelope["s"] == "json"
                    and raw[0] == 123  # b"{" (JSON after whitespace is no entry)
                ):
                    values[index] = envelope["d"]
                    times[index] = t
                    continue
            except not_plain:
                pass
        others[index] = try_unpack_entry(raw, serializer, on_corrupt, key=prefix + keys[index])
    return BatchEntries(values, times, others)


__all__ = ["BatchEntries", "unpack_batch", "unpack_entries"]
