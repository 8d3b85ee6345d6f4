"""Specification of bad input: clear errors at the call, and which keys are one key."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from tests.stackquery.client_origin import Origin

OBJ = r"<object object at 0x[0-9a-f]+>"


async def load() -> int:
    return 1


class TestInvalidKeys:
    @pytest.mark.parametrize(
        ("key", "message"),
        [
            (["user", 1], r"^query key must be a tuple, got list: \['user', 1\]$"),
            ("user", r"^query key must be a tuple, got str: 'user'$"),
            (None, r"^query key must be a tuple, got NoneType: None$"),
            (
                ("u", [1]),
                r"^query key \('u', \[1\]\) holds a list; use a tuple, which is hashable$",
            ),
            (
                ("u", ("v", [1])),
                r"^query key \('u', \('v', \[1\]\)\) holds a list; use a tuple, which is hashable$",
            ),
            (
                ("u", {1, 2}),
                r"^query key \('u', \{1, 2\}\) holds a set \(\{1, 2\}\); "
                r"keys hold str, int, float, bool, None, tuples and str-keyed dicts$",
            ),
            (
                ("u", b"x"),
                r"^query key \('u', b'x'\) holds a bytes \(b'x'\); "
                r"keys hold str, int, float, bool, None, tuples and str-keyed dicts$",
            ),
            (("u", math.nan), r"^query key \('u', nan\) holds a non-finite float nan$"),
            (("u", -math.inf), r"^query key \('u', -inf\) holds a non-finite float -inf$"),
            (("u", {1: "a"}), r"^query key \('u', \{1: 'a'\}\) holds a dict with a non-str key 1$"),
            (
                ("u", {"a": [1]}),
                r"^query key \('u', \{'a': \[1\]\}\) holds a list; use a tuple, which is hashable$",
            ),
            (
                ("u", "\ud800"),
                r"^query key \('u', '\\ud800'\) cannot be encoded: "
                r"str is not valid UTF-8: surrogates not allowed$",
            ),
        ],
    )
    def test_bad_key_is_refused_when_the_options_are_made(self, key: Any, message: str) -> None:
        """A key that is not a tuple of the allowed elements raises InvalidKeyError."""
        with pytest.raises(sq.InvalidKeyError, match=message) as info:
            sq.QueryOptions(query_key=key, query_fn=load)
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value, sq.StackqueryError)

    def test_object_element_names_its_type(self) -> None:
        """An arbitrary object in a key is named by its type and repr."""
        with pytest.raises(
            sq.InvalidKeyError, match=rf"^query key \('u', {OBJ}\) holds a object \({OBJ}\); "
        ):
            sq.QueryOptions(query_key=("u", object()), query_fn=load)

    def test_huge_integral_float_is_a_key_element(self) -> None:
        """An integral float past 64 bits (1e300) is a valid element, hashed as its int."""
        options = sq.QueryOptions(query_key=("u", 1e300), query_fn=load)
        assert options.key_hash == f'["u",{int(1e300)}]'

    @pytest.mark.parametrize(
        "call",
        [
            lambda c: c.get_query_data(("u", [1])),
            lambda c: c.get_query_state(("u", [1])),
            lambda c: c.set_query_data(("u", [1]), 1),
            lambda c: c.invalidate_queries(("u", [1])),
            lambda c: c.cancel_queries(("u", [1])),
            lambda c: c.remove_queries(("u", [1])),
            lambda c: c.reset_queries(("u", [1])),
        ],
        ids=[
            "get_query_data",
            "get_query_state",
            "set_query_data",
            "invalidate",
            "cancel",
            "remove",
            "reset",
        ],
    )
    async def test_every_client_method_refuses_a_bad_key(
        self, call: Callable[[sq.QueryClient], Any]
    ) -> None:
        """Each method that takes a key raises InvalidKeyError for a bad one, and caches nothing."""
        async with sq.open_query_client() as client:
            with pytest.raises(sq.InvalidKeyError, match=r"^query key \('u', \[1\]\) holds a list"):
                result = call(client)
                if isinstance(result, Awaitable):
                    await result
            assert client.statistics().queries == 0


class TestKeyIdentity:
    async def test_int_and_integral_float_are_one_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """("u", 1) and ("u", 1.0) are one key: data set under one is a hit under the other."""
        origin = Origin()
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=60.0)) as client:
            await client.set_query_data(("u", 1), "one")
            with trio.testing.assert_no_checkpoints():
                assert (
                    await client.fetch_query(sq.QueryOptions(query_key=("u", 1.0), query_fn=origin))
                    == "one"
                )
            assert origin.calls == 0
            assert client.statistics().queries == 1

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            (("u", True), ("u", 1)),
            (("u", False), ("u", 0)),
            (("u", None), ("u", "None")),
            (("u", (1, 2)), ("u", 1, 2)),
            (("u", 1.5), ("u", 1)),
            (("u", "1"), ("u", 1)),
            (("u",), ("u", None)),
        ],
    )
    async def test_distinct_keys_stay_apart(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
        """Keys that differ in type or shape are two keys, even where Python calls them equal."""
        async with sq.open_query_client() as client:
            await client.set_query_data(a, "a")
            await client.set_query_data(b, "b")
            assert (client.get_query_data(a), client.get_query_data(b)) == ("a", "b")
            assert client.statistics().queries == 2

    async def test_dict_elements_are_canonical_regardless_of_order(self) -> None:
        """Dicts in keys hash the same whatever their insertion order, nested ones too."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("q", {"a": 1, "b": {"x": 1, "y": 2}}), "found")
            assert client.get_query_data(("q", {"b": {"y": 2, "x": 1}, "a": 1})) == "found"
            assert client.get_query_data(("q", {"b": {"y": 2, "x": 1}, "a": 1.0})) == "found"
            assert client.statistics().queries == 1

    async def test_negative_zero_and_zero_are_one_key(self) -> None:
        """("u", -0.0) and ("u", 0) are one key."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("u", -0.0), "zero")
            assert client.get_query_data(("u", 0)) == "zero"

    async def test_prefix_matching_uses_canonical_elements(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries(("u", 1.0)) matches ("u", 1, "posts")."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("u", 1, "posts"), [])
            assert await client.invalidate_queries(("u", 1.0)) == 1


class TestInvalidOptions:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"stale_time": -1}, r"^stale_time must be >= 0 seconds, got -1$"),
            ({"stale_time": math.nan}, r"^stale_time must be >= 0 seconds, got nan$"),
            ({"stale_time": "5"}, r"^stale_time must be a number of seconds, got str: '5'$"),
            ({"stale_time": True}, r"^stale_time must be a number of seconds, got bool: True$"),
            ({"gc_time": -0.5}, r"^gc_time must be >= 0 seconds, got -0\.5$"),
            ({"gc_time": math.nan}, r"^gc_time must be >= 0 seconds, got nan$"),
            ({"timeout": 0}, r"^timeout must be > 0 seconds, got 0$"),
            ({"timeout": -1.0}, r"^timeout must be > 0 seconds, got -1\.0$"),
            ({"refetch_interval": 0.0}, r"^refetch_interval must be > 0 seconds, got 0\.0$"),
            ({"refetch_interval": math.nan}, r"^refetch_interval must be > 0 seconds, got nan$"),
            ({"retry_delay": -2}, r"^retry_delay must be >= 0 seconds, got -2$"),
            ({"retry": -1}, r"^retry must be an int >= 0, got -1$"),
            ({"retry": 1.5}, r"^retry must be an int >= 0, got 1\.5$"),
            ({"retry": True}, r"^retry must be an int >= 0, got True$"),
        ],
    )
    def test_bad_query_option_is_refused(self, kwargs: dict[str, Any], message: str) -> None:
        """A negative, NaN or mistyped time or retry raises InvalidOptionError naming it."""
        with pytest.raises(sq.InvalidOptionError, match=message) as info:
            sq.QueryOptions(query_key=("k",), query_fn=load, **kwargs)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, sq.StackqueryError)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"query_fn": 5}, r"^query_fn must be callable, got int: 5$"),
            ({"query_fn": None}, r"^query_fn must be callable, got NoneType: None$"),
            ({"query_fn": load, "select": "name"}, r"^select must be callable, got str: 'name'$"),
            ({"query_fn": load, "on_success": 1}, r"^on_success must be callable, got int: 1$"),
            ({"query_fn": load, "on_error": 1}, r"^on_error must be callable, got int: 1$"),
            ({"query_fn": load, "on_settled": 1}, r"^on_settled must be callable, got int: 1$"),
        ],
    )
    def test_non_callable_function_option_is_a_type_error(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        """query_fn, select and the callbacks must be callable."""
        with pytest.raises(TypeError, match=message):
            sq.QueryOptions(query_key=("k",), **kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"stale_time": -1.0}, r"^stale_time must be >= 0 seconds, got -1\.0$"),
            ({"gc_time": math.nan}, r"^gc_time must be >= 0 seconds, got nan$"),
            ({"retry": -3}, r"^retry must be an int >= 0, got -3$"),
            ({"retry_delay": math.nan}, r"^retry_delay must be >= 0 seconds, got nan$"),
            ({"max_queries": 0}, r"^max_queries must be None or an int >= 1, got 0$"),
            ({"max_queries": 2.0}, r"^max_queries must be None or an int >= 1, got 2\.0$"),
            ({"l2_timeout": 0}, r"^l2_timeout must be > 0 seconds, got 0$"),
            ({"shutdown_timeout": -1}, r"^shutdown_timeout must be >= 0 seconds, got -1$"),
        ],
    )
    def test_bad_client_config_is_refused(self, kwargs: dict[str, Any], message: str) -> None:
        """QueryClientConfig refuses negative, NaN and out-of-range settings."""
        with pytest.raises(sq.InvalidOptionError, match=message):
            sq.QueryClientConfig(**kwargs)

    def test_client_refuses_a_config_of_the_wrong_type(self) -> None:
        """QueryClient(config) requires a QueryClientConfig."""
        with pytest.raises(TypeError, match=r"^config must be a QueryClientConfig, got dict$"):
            sq.QueryClient({"stale_time": 1})  # type: ignore[arg-type]

    async def test_watch_refuses_an_unknown_notify_on(self) -> None:
        """watch(notify_on=...) accepts "data" or "all" only."""
        async with sq.open_query_client() as client:
            with pytest.raises(
                sq.InvalidOptionError, match=r"^notify_on must be 'data' or 'all', got 'some'$"
            ):
                client.watch(sq.QueryOptions(query_key=("k",), query_fn=load), notify_on="some")

    async def test_subscribe_refuses_a_non_callable_listener(self) -> None:
        """subscribe(listener) requires a callable and attaches nothing otherwise."""
        async with sq.open_query_client() as client:
            observer = client.watch(sq.QueryOptions(query_key=("k",), query_fn=load))
            with pytest.raises(TypeError, match=r"^listener must be callable, got str$"):
                observer.subscribe("print")  # type: ignore[arg-type]
            assert not observer.subscribed
            assert client.statistics().active_actors == 0
