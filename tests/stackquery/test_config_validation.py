"""Specification of settings refused when they are made: QueryClientConfig and query_fn."""

from __future__ import annotations

import functools
import math
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any
from unittest.mock import AsyncMock

import pytest
import redis.asyncio

import stackquery as sq
from actors import RestartIntensity
from backends import RedisClient

STORE = "storage must be a store with async get, set and delete"
OBJ = r"<[\w.]+ object at 0x[0-9a-f]+>"


async def load() -> int:
    return 1


async def load_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


def search(term: str, *, page: int) -> list[str]:
    return [term] * page


def all_optional(limit: int = 10, *args: Any, sort: str = "id", **kwargs: Any) -> int:
    return limit


class Repo:
    async def load(self, user_id: int) -> int:
        return user_id

    async def all(self) -> list[int]:
        return []

    @classmethod
    async def count(cls) -> int:
        return 0


class Loader:
    async def __call__(self) -> int:
        return 1


class PageLoader:
    async def __call__(self, page: int) -> int:
        return page


class MinimalStore:
    """The StorageBackend protocol and nothing more; get returns text, as PyStackQuery's does."""

    async def get(self, key: str) -> str | None:
        return None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        return None

    async def delete(self, key: str) -> None:
        return None


def passing_through(
    method: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """A decorator with a sync wrapper that returns the wrapped coroutine."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        return method(*args, **kwargs)

    return wrapper


class DecoratedStore:
    @passing_through
    async def get(self, key: str) -> bytes | None:
        return None

    @passing_through
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        return None

    @passing_through
    async def delete(self, key: str) -> None:
        return None


class SyncStore:
    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def __repr__(self) -> str:
        return "SyncStore()"


class NoDeleteStore:
    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        return None

    def __repr__(self) -> str:
        return "NoDeleteStore()"


class TestClientConfigRefusals:
    @pytest.mark.parametrize(
        ("storage", "message"),
        [
            (
                "cache.sqlite3",
                r", got str: 'cache\.sqlite3'; use SQLiteStorage\('cache\.sqlite3'\)$",
            ),
            (
                pathlib.PurePosixPath("c.db"),
                r", got PurePosixPath: PurePosixPath\('c\.db'\); "
                r"use SQLiteStorage\(PurePosixPath\('c\.db'\)\)$",
            ),
            (
                "redis://localhost:6379/0",
                r", got str: 'redis://localhost:6379/0'; "
                r"use RedisStorage\('redis://localhost:6379/0'\)$",
            ),
            (
                sq.MemoryStorage,
                r", got the class MemoryStorage; use an instance: MemoryStorage\(\)$",
            ),
            (42, r", got int: 42; it has no get$"),
            (SyncStore(), r", got SyncStore: SyncStore\(\); its get is not async$"),
            (NoDeleteStore(), r", got NoDeleteStore: NoDeleteStore\(\); it has no delete$"),
            (
                RedisClient.from_url("redis://localhost"),
                rf", got RedisClient: {OBJ}; use RedisStorage\(client\)$",
            ),
            (
                redis.asyncio.Redis(),
                r", got Redis: <redis\.asyncio\.client\.Redis\(.{72}; use RedisStorage\(client\)$",
            ),
        ],
    )
    def test_storage_that_is_not_a_store(self, storage: object, message: str) -> None:
        """storage= refuses what is not a store, naming the store to use when it can."""
        with pytest.raises(sq.InvalidOptionError, match="^" + STORE + message):
            sq.QueryClientConfig(storage=storage)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            (
                {"key_prefix": None},
                r"^key_prefix must be a str, got NoneType: None; use '' for no prefix$",
            ),
            ({"key_prefix": 123}, r"^key_prefix must be a str, got int: 123$"),
            ({"key_prefix": b"sq:"}, r"^key_prefix must be a str, got bytes: b'sq:'$"),
            (
                {"key_prefix": "sq\ud800"},
                r"^key_prefix must be valid unicode text, got 'sq\\ud800'$",
            ),
            ({"mailbox_capacity": 0}, r"^mailbox_capacity must be an int >= 1, got 0$"),
            ({"mailbox_capacity": -5}, r"^mailbox_capacity must be an int >= 1, got -5$"),
            ({"mailbox_capacity": 8.0}, r"^mailbox_capacity must be an int >= 1, got 8\.0$"),
            ({"mailbox_capacity": True}, r"^mailbox_capacity must be an int >= 1, got True$"),
            ({"mailbox_capacity": "8"}, r"^mailbox_capacity must be an int >= 1, got '8'$"),
            (
                {"restart_intensity": 5},
                r"^restart_intensity must be a stackquery\.RestartIntensity, got int: 5; "
                r"use stackquery\.RestartIntensity\(max_restarts=5\)$",
            ),
            (
                {"restart_intensity": (3, 60.0)},
                r"^restart_intensity must be a stackquery\.RestartIntensity, "
                r"got tuple: \(3, 60\.0\); "
                r"use stackquery\.RestartIntensity\(max_restarts=3, within=60\.0\)$",
            ),
            (
                {"restart_intensity": None},
                r"^restart_intensity must be a stackquery\.RestartIntensity, got NoneType: None; "
                r"use stackquery\.RestartIntensity\(max_restarts=\.\.\., within=\.\.\.\)$",
            ),
            ({"broadcast": 1}, r"^broadcast must be True, False or None, got int: 1$"),
            ({"broadcast": "no"}, r"^broadcast must be True, False or None, got str: 'no'$"),
            ({"single_flight": 0}, r"^single_flight must be True, False or None, got int: 0$"),
            ({"retry": None}, r"^retry must be an int >= 0, got None$"),
            (
                {"retry_delay": None},
                r"^retry_delay must be a number of seconds, got NoneType: None$",
            ),
            (
                {"retry_delay": math.inf},
                r"^retry_delay must be a finite number of seconds, got inf; "
                r"use retry=0 for no retries$",
            ),
            ({"lease_time": math.inf}, r"^lease_time must be a finite number of seconds, got inf$"),
            (
                {"lease_poll_interval": math.inf},
                r"^lease_poll_interval must be a finite number of seconds, got inf$",
            ),
            (
                {"storage_ttl": math.inf},
                r"^storage_ttl must be a finite number of seconds, got inf; "
                r"use None for no expiry$",
            ),
            (
                {"serializer": "json"},
                r"^serializer must be a serializer, got str: 'json'; "
                r"use stackquery\.serializers\.json$",
            ),
            (
                {"serializer": "yaml"},
                r"^serializer must be a serializer, got str: 'yaml'; "
                r"use an object with dumps and loads$",
            ),
            (
                {"serializer": object()},
                r"^serializer is not usable: a serializer needs callable dumps and loads; "
                r"object lacks dumps and loads$",
            ),
            (
                {"serializer": sq.serializers.JsonSerializer},
                r"^serializer is not usable: expected a serializer instance, "
                r"got the class JsonSerializer$",
            ),
        ],
    )
    def test_bad_setting(self, kwargs: dict[str, Any], message: str) -> None:
        """A setting of the wrong type or out of range raises InvalidOptionError naming it."""
        with pytest.raises(sq.InvalidOptionError, match=message):
            sq.QueryClientConfig(**kwargs)


class TestClientConfigAccepts:
    @pytest.mark.parametrize(
        "storage",
        [None, sq.MemoryStorage(), MinimalStore(), DecoratedStore(), AsyncMock()],
        ids=["none", "memory", "minimal", "decorated", "async-mock"],
    )
    def test_any_store_with_async_methods(self, storage: object) -> None:
        """Any object whose get, set and delete are async is a store (a structural protocol)."""
        assert sq.QueryClientConfig(storage=storage).storage is storage

    def test_edge_values_that_are_valid(self) -> None:
        """The smallest and open-ended values of each checked setting are accepted as given."""
        intensity = RestartIntensity(max_restarts=0, within=1.0)
        config = sq.QueryClientConfig(
            key_prefix="",
            mailbox_capacity=1,
            restart_intensity=intensity,
            broadcast=False,
            single_flight=True,
            retry=0,
            retry_delay=0,
            storage_ttl=None,
            lease_time=0.001,
            serializer=sq.serializers.msgpack,
        )
        assert (config.key_prefix, config.mailbox_capacity, config.restart_intensity) == (
            "",
            1,
            intensity,
        )
        assert config.serializer is sq.serializers.msgpack


class TestQueryOptionsRefusals:
    @pytest.mark.parametrize(
        ("query_fn", "message"),
        [
            (search, r"^query_fn search requires term, page but "),
            (
                functools.partial(Repo.load),
                r"^query_fn functools\.partial\(Repo\.load\) requires self, user_id but ",
            ),
        ],
    )
    def test_query_fn_that_needs_arguments(self, query_fn: Any, message: str) -> None:
        """A query_fn that requires more than one argument is a TypeError naming it."""
        ending = (
            r"is called with no arguments, or with one \(its QueryContext\); "
            r"bind them with functools\.partial or a lambda$"
        )
        with pytest.raises(TypeError, match=message) as info:
            sq.QueryOptions(query_key=("k",), query_fn=query_fn)
        assert info.match(ending)

    def test_query_fn_whose_one_argument_is_keyword_only(self) -> None:
        """One required keyword-only parameter cannot take the context: a TypeError naming it."""
        with pytest.raises(
            TypeError,
            match=r"^query_fn functools\.partial\(search\) requires page as a keyword but is "
            r"called with no arguments, or with its QueryContext as the one positional "
            r"argument; bind it with functools\.partial or a lambda$",
        ):
            sq.QueryOptions(query_key=("k",), query_fn=functools.partial(search, "x"))

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"enabled": None}, r"^enabled must be True or False, got NoneType: None$"),
            ({"enabled": "no"}, r"^enabled must be True or False, got str: 'no'$"),
            ({"single_flight": 1}, r"^single_flight must be True, False or None, got int: 1$"),
            (
                {"initial_data_updated_at": "yesterday"},
                r"^initial_data_updated_at must be a number of seconds, got str: 'yesterday'$",
            ),
            (
                {"initial_data_updated_at": math.nan},
                r"^initial_data_updated_at must be >= 0 seconds, got nan$",
            ),
            (
                {"initial_data_updated_at": math.inf},
                r"^initial_data_updated_at must be a finite number of seconds, got inf$",
            ),
            (
                {"retry_delay": math.inf},
                r"^retry_delay must be a finite number of seconds, got inf; "
                r"use retry=0 for no retries$",
            ),
        ],
    )
    def test_bad_option(self, kwargs: dict[str, Any], message: str) -> None:
        """A flag or time of the wrong type or out of range raises InvalidOptionError naming it."""
        with pytest.raises(sq.InvalidOptionError, match=message):
            sq.QueryOptions(query_key=("k",), query_fn=load, **kwargs)


class TestQueryOptionsAccepts:
    @pytest.mark.parametrize(
        "query_fn",
        [
            load,
            all_optional,
            functools.partial(load_user, 42),
            functools.partial(search, "x", page=2),
            functools.partial(functools.partial(search, "x"), page=2),
            Repo().all,
            Repo.count,
            Loader(),
            dict,
            lambda: 1,
        ],
        ids=[
            "async-def",
            "only-optional-parameters",
            "partial-binding-all",
            "partial-with-keywords",
            "nested-partial",
            "bound-method",
            "classmethod",
            "async-call-object",
            "uninspectable-builtin",
            "lambda",
        ],
    )
    def test_query_fn_callable_with_no_arguments(self, query_fn: Any) -> None:
        """Whatever can be called with no arguments (or cannot be inspected) is a query_fn."""
        options = sq.QueryOptions(query_key=("k",), query_fn=query_fn)
        assert (options.query_fn, options.takes_context) == (query_fn, False)

    @pytest.mark.parametrize(
        "query_fn",
        [
            load_user,
            functools.partial(search, page=2),
            Repo().load,
            PageLoader(),
            len,
        ],
        ids=["async-def", "partial-leaving-one", "bound-method", "call-object", "builtin"],
    )
    def test_query_fn_with_one_required_parameter_takes_the_context(self, query_fn: Any) -> None:
        """Exactly one required positional parameter: the query_fn is called with a QueryContext."""
        assert sq.QueryOptions(query_key=("k",), query_fn=query_fn).takes_context is True
