"""Signed entries are bound to their key: the signature covers key, header and payload.

Signed pickle entries are format 2: the HMAC covers the L2 key the entry is
stored under, the header (flags, data_updated_at, serializer name) and the
pickle.  A copy under another key, an edited time or a cleared invalidated
flag fails the check and is a counted miss; setting the invalidated flag
(what ``stackquery invalidate`` does without the secret) only makes it stale.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from backends import MemoryStorage
from stackquery._entry import SIGNED_FORMAT_VERSION, CorruptEntryError, flag_invalidated
from stackquery._keys import canonical_key
from tests.stackquery.fleet_support import Counted

SECRET = b"0123456789abcdef-signed-entries"
SIGNED = sq.serializers.pickle(key=SECRET)
T = 1712345678.25
TIME_AT = slice(5, 13)
"""Where data_updated_at sits in a binary entry."""


def l2_name(key: tuple[Any, ...]) -> str:
    """The key's name in the store (the client's default ``key_prefix``)."""
    return "sq:" + canonical_key(key)[1]


def corrupt(raw: bytes, key: str) -> CorruptEntryError:
    """Unpack ``raw`` as stored under ``key``, expecting CorruptEntryError, and return it."""
    with pytest.raises(CorruptEntryError) as info:
        sq.unpack_entry(raw, SIGNED, key=key)
    return info.value


def format_1_entry(value: Any, at: float) -> bytes:
    """A signed-pickle entry as format 1 wrote it: the signature covered the pickle only."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    payload = hmac.digest(SECRET, data, hashlib.sha256) + data
    header = struct.pack(">3sBBdIB", b"\xffSQ", 1, 0, at, len(payload), len(b"pickle"))
    return header + b"pickle" + payload


class TestEnvelope:
    def test_a_signed_entry_round_trips_under_its_own_key(self) -> None:
        """Format 2, read back under the key it was written for."""
        raw = sq.pack_entry({"a": 1}, data_updated_at=T, serializer=SIGNED, key="sq:k")
        assert raw[3] == SIGNED_FORMAT_VERSION == 2
        entry = sq.unpack_entry(raw, SIGNED, key="sq:k")
        assert (entry.value, entry.data_updated_at, entry.invalidated) == ({"a": 1}, T, False)

    def test_a_signed_entry_under_another_key_is_corrupt(self) -> None:
        """The same bytes under another key fail the signature; nothing is unpickled."""
        raw = sq.pack_entry({"a": 1}, data_updated_at=T, serializer=SIGNED, key="sq:k")
        error = corrupt(raw, "sq:other")
        assert (error.reason, str(error)) == (
            "undecodable-payload",
            "corrupt entry (undecodable-payload): the signature does not cover this key and header",
        )

    def test_an_edited_timestamp_is_corrupt(self) -> None:
        """A header time moved forward by a second fails the signature."""
        raw = bytearray(sq.pack_entry(1, data_updated_at=T, serializer=SIGNED, key="sq:k"))
        raw[TIME_AT] = struct.pack(">d", T + 1.0)
        assert corrupt(bytes(raw), "sq:k").reason == "undecodable-payload"

    def test_setting_the_invalidated_flag_without_the_secret_makes_it_stale(self) -> None:
        """The flag set by a process without the secret is honoured: the entry is invalidated."""
        raw = sq.pack_entry(1, data_updated_at=T, serializer=SIGNED, key="sq:k")
        flagged = flag_invalidated(raw)
        assert flagged is not None and flagged[4] == 1
        assert sq.unpack_entry(flagged, SIGNED, key="sq:k").invalidated is True
        assert flag_invalidated(flagged) is None

    def test_clearing_a_signed_invalidated_flag_is_corrupt(self) -> None:
        """An entry signed as invalidated cannot be made fresh by clearing the flag."""
        raw = bytearray(
            sq.pack_entry(1, data_updated_at=T, serializer=SIGNED, key="sq:k", invalidated=True)
        )
        raw[4] = 0
        assert corrupt(bytes(raw), "sq:k").reason == "undecodable-payload"

    def test_a_format_1_signed_entry_is_an_unsupported_version(self) -> None:
        """Entries signed before format 2 are not bound to a key: they are refused, unread."""
        error = corrupt(format_1_entry({"a": 1}, T), "sq:k")
        assert (error.reason, str(error)) == (
            "unsupported-version",
            "corrupt entry (unsupported-version): format 1 signed entries are not bound to "
            "their key; format 2 is",
        )

    def test_unsigned_serializers_still_write_format_1(self) -> None:
        """msgpack and json entries are unchanged (format 1); the key is not part of them."""
        raw = sq.pack_entry([1], data_updated_at=T, serializer=sq.serializers.msgpack, key="a")
        assert raw[3] == 1
        assert sq.unpack_entry(raw, sq.serializers.msgpack, key="b").value == [1]


class TestInTheClient:
    async def test_a_signed_entry_copied_under_another_key_is_a_counted_miss(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """User 1's entry copied to user 2's name is not user 2's data: the origin is asked."""
        store = MemoryStorage()
        origin = Counted("v")
        config = sq.QueryClientConfig(storage=store, serializer=SIGNED, stale_time=60.0)
        async with sq.open_query_client(config) as client:
            assert await client.fetch_query(sq.QueryOptions(("user", 1), origin)) == "v1"
        raw = await store.get(l2_name(("user", 1)))
        assert raw is not None
        await store.set(l2_name(("user", 2)), raw)
        async with sq.open_query_client(config) as client:
            assert await client.fetch_query(sq.QueryOptions(("user", 2), origin)) == "v2"
            stats = client.l2_statistics()
            assert stats is not None and stats.corrupt == 1

    async def test_an_old_format_entry_is_a_counted_miss_and_rewritten(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A format 1 signed entry is refetched; the new value is written as format 2."""
        key = ("user", 3)
        store = MemoryStorage()
        await store.set(l2_name(key), format_1_entry("old", T))
        origin = Counted("v")
        config = sq.QueryClientConfig(storage=store, serializer=SIGNED, stale_time=60.0)
        async with sq.open_query_client(config) as client:
            assert await client.fetch_query(sq.QueryOptions(key, origin)) == "v1"
            stats = client.l2_statistics()
            assert stats is not None and stats.corrupt == 1
        raw = await store.get(l2_name(key))
        assert raw is not None and raw[3] == 2
        assert sq.unpack_entry(raw, SIGNED, key=l2_name(key)).value == "v1"
