"""Specification of the canonical key hash: keys equal in Python are one key, and old hashes hold.

The hash is the L1 table's key and, behind ``key_prefix``, the L2 key: a
change to the hash of a key that hashed consistently before would orphan
every entry stored under it.  So the only hashes allowed to change are those
of keys that broke the rule (an integral float at or past 2**63, which
hashed apart from its equal int).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import stackquery as sq
from backends import MemoryStorage
from stackquery._keys import canonical_key, key_from_hash
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import config, entry_bytes, l2_stats


async def load() -> int:
    return 1


def hash_of(key: tuple[Any, ...]) -> str:
    return sq.QueryOptions(query_key=key, query_fn=load).key_hash


def hash_before(key: object) -> str:
    """The hash as the code before this change computed it (for keys it accepted)."""

    def normalize(value: Any) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return int(value) if value.is_integer() and abs(value) < 2.0**63 else value
        if isinstance(value, tuple):
            return tuple(normalize(v) for v in value)
        return {k: normalize(v) for k, v in value.items()}

    return orjson.dumps(normalize(key), option=orjson.OPT_SORT_KEYS).decode()


MAGNITUDES = {
    "2**63": 2**63,
    "-(2**63)": -(2**63),
    "2**64": 2**64,
    "-(2**64)": -(2**64),
    "2**70": 2**70,
    "1e300 as int": int(1e300),
    "max float as int": int(1.7976931348623157e308),
}

ELEMENT = st.recursive(
    st.none()
    | st.booleans()
    | st.text(max_size=8).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) < 2.0**63),
    lambda inner: st.tuples(inner, inner) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
"""Key elements that the code before accepted and hashed consistently."""


class TestIntegralFloatsAreTheirInts:
    @pytest.mark.parametrize("number", MAGNITUDES.values(), ids=MAGNITUDES)
    def test_an_int_and_its_float_are_one_key_at_every_magnitude(self, number: int) -> None:
        """("u", n) and ("u", float(n)) hash alike however large n is, as the int's digits."""
        as_float = float(number)
        assert as_float == number  # equal in Python, so one key
        assert hash_of(("u", number)) == hash_of(("u", as_float)) == f'["u",{number}]'

    def test_two_to_the_63_int_and_float_share_one_entry(self) -> None:
        """The issue's case: ("u", 2**63) and ("u", 2.0**63) are the same key."""
        assert hash_of(("u", 2**63)) == hash_of(("u", 2.0**63)) == '["u",9223372036854775808]'

    def test_ints_that_are_not_the_same_float_stay_apart(self) -> None:
        """2**63 + 1 is not equal to 2.0**63 in Python, and is not the same key."""
        assert 2**63 + 1 != 2.0**63
        assert hash_of(("u", 2**63 + 1)) != hash_of(("u", 2.0**63))

    def test_nested_integral_floats_are_normalised_too(self) -> None:
        """Inside tuples and dict values as well."""
        assert hash_of(("u", (2.0**64,), {"n": 1e20})) == hash_of(("u", (2**64,), {"n": 10**20}))

    def test_a_huge_int_comes_back_exactly_from_its_hash(self) -> None:
        """key_from_hash gives back the int itself, not a rounded float."""
        key = ("u", 2**64 + 1, {"n": -(2**70) - 3}, 1.5, 10**20)
        normal, key_hash = canonical_key(key)
        assert normal == key
        back = key_from_hash(key_hash)
        assert back == key
        assert [type(v) for v in back] == [str, int, dict, float, int]
        assert type(back[2]["n"]) is int

    async def test_data_under_the_int_is_a_hit_under_the_float(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data(("u", 2**63)) is found by a fetch of ("u", 2.0**63); no origin call."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.set_query_data(("u", 2**63), "set")
            options = sq.QueryOptions(query_key=("u", 2.0**63), query_fn=origin, stale_time=60.0)
            assert await client.fetch_query(options) == "set"
            assert client.get_query_data(("u", 2.0**63)) == "set"
        assert origin.calls == 0


class TestBoolsAndNonFiniteFloats:
    def test_true_and_1_are_two_keys(self) -> None:
        """True == 1 in Python, but a flag is not a count: they stay two keys, as documented."""
        assert hash_of(("u", True)) == '["u",true]'
        assert hash_of(("u", 1)) == hash_of(("u", 1.0)) == '["u",1]'

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
    def test_a_non_finite_float_is_refused(self, bad: float) -> None:
        """nan is equal to nothing, not even itself, and inf has no int: InvalidKeyError."""
        message = rf"^query key \('u', \(1, {bad!r}\)\) holds a non-finite float {bad!r}$"
        with pytest.raises(sq.InvalidKeyError, match=message):
            sq.QueryOptions(query_key=("u", (1, bad)), query_fn=load)

    def test_an_int_too_long_to_print_is_refused(self) -> None:
        """An int past Python's int-to-str limit cannot be written in a hash: InvalidKeyError."""
        message = r"^query key holds an int too long to write \(16610 bits\)$"
        with pytest.raises(sq.InvalidKeyError, match=message):
            canonical_key(("u", 10**5000))
        with pytest.raises(sq.InvalidKeyError, match=r"^query key <tuple that cannot be printed> "):
            canonical_key(("u", [1], 10**5000))


class TestOldHashesHold:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            (("user", 42), '["user",42]'),
            (("u", 1.0), '["u",1]'),
            (("u", -0.0), '["u",0]'),
            (("u", 1.5), '["u",1.5]'),
            (("u", 1e-7), '["u",1e-7]'),
            (("u", 2.0**62), '["u",4611686018427387904]'),
            (("u", 2**64 - 1), '["u",18446744073709551615]'),
            (("u", -(2**63)), '["u",-9223372036854775808]'),
            (("u", None, True, "x"), '["u",null,true,"x"]'),
            (("u", {"b": 1, "a": (2.0, "c")}), '["u",{"a":[2,"c"],"b":1}]'),
            ((), "[]"),
        ],
    )
    def test_pinned_hashes_are_unchanged(self, key: tuple[Any, ...], expected: str) -> None:
        """Keys stored under these hashes before are found under them still."""
        assert hash_before(key) == expected
        assert hash_of(key) == expected

    @given(st.lists(ELEMENT, max_size=4).map(tuple))
    def test_every_key_that_hashed_consistently_keeps_its_hash(self, key: tuple[Any, ...]) -> None:
        """For any key the code before accepted and did not split from its equals: same hash."""
        assert hash_of(key) == hash_before(key)

    async def test_an_entry_stored_before_is_still_found(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry under the old hash of ("u", 2.0**62, 1.5) is a hit: no origin call."""
        store = MemoryStorage()
        key = ("u", 2.0**62, 1.5)
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            await store.set("sq:" + hash_before(key), entry_bytes("stored", at=client.clock.wall()))
            options = sq.QueryOptions(query_key=key, query_fn=origin, stale_time=60.0)
            assert await client.fetch_query(options) == "stored"
            assert l2_stats(client).hits == 1
        assert origin.calls == 0
