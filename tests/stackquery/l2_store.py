"""A controllable L2 store for the client's second-tier specification tests.

``ControlledStorage`` is a :class:`~backends.MemoryStorage` behind switches:
every call can be made to fail or to hang, and reads or writes can be held at
a gate the test opens.  It records what it was asked (keys per ``get_many``,
items and TTL per ``set_many``, deleted keys) so that tests assert exactly
what reached the store.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import trio

import stackquery as sq
from backends import MemoryStorage, StorageUnavailableError

KEY_PREFIX = "sq:"

KEY = ("user", 1)
"""The key most L2 specifications use."""
L2_KEY = 'sq:["user",1]'
"""Where the client stores KEY in L2 (the default key_prefix, then its canonical hash)."""


def options(origin: Any, key: tuple[Any, ...] = KEY, **kwargs: Any) -> sq.QueryOptions[Any]:
    """Options of ``key`` with ``origin`` as its query_fn."""
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


def config(store: Any, **kwargs: Any) -> sq.QueryClientConfig:
    """A client config with ``store`` as L2."""
    return sq.QueryClientConfig(storage=store, **kwargs)


def l2_stats(client: sq.QueryClient) -> sq.L2Statistics:
    """The client's L2 statistics (it has an L2)."""
    stats = client.l2_statistics()
    assert stats is not None
    return stats


def l2_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNING messages logged on ``stackquery.l2``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "stackquery.l2" and r.levelno == logging.WARNING
    ]


def store_key(options_or_hash: sq.QueryOptions[Any] | str) -> str:
    """The L2 key of a query (the client's default ``key_prefix`` and the key's hash)."""
    if isinstance(options_or_hash, str):
        return KEY_PREFIX + options_or_hash
    return KEY_PREFIX + options_or_hash.key_hash


def entry_bytes(value: Any, *, at: float, invalidated: bool = False) -> bytes:
    """An L2 entry of ``value`` fetched at wall time ``at``, as the json serializer writes it."""
    return sq.pack_entry(
        value, data_updated_at=at, serializer=sq.serializers.json, invalidated=invalidated
    )


class ControlledStorage:
    """A MemoryStorage whose calls the test can make fail, hang, or wait at a gate.

    Another store (a ``SQLiteStorage``) can stand behind the switches instead:
    pass it as ``memory``.

    Attributes:
        failure: raised (a fresh copy) by every call while set.
        hanging: while true, every call sleeps forever (until cancelled).
        read_gate: while set, ``get_many`` waits for this event before reading.
        write_gate: while set, ``set_many`` and ``delete`` wait for this event.
        write_delay: seconds (trio time) each ``set_many`` and ``delete`` takes.
        failed_calls: calls that raised ``failure``.
        hung_calls: calls that hung.
    """

    def __init__(self, memory: Any = None) -> None:
        self.memory = memory if memory is not None else MemoryStorage()
        self.failure: Exception | None = None
        self.hanging = False
        self.read_gate: trio.Event | None = None
        self.write_gate: trio.Event | None = None
        self.write_delay = 0.0
        self.failed_calls = 0
        self.hung_calls = 0
        self.get_many_calls: list[list[str]] = []
        self.set_many_calls: list[tuple[dict[str, bytes], float | None]] = []
        self.deleted: list[str] = []

    def fail_with(self, error: Exception | None = None) -> None:
        """Make every call raise ``error`` (a StorageUnavailableError by default)."""
        self.failure = error if error is not None else StorageUnavailableError("the store is down")

    def recover(self) -> None:
        """Answer calls normally again."""
        self.failure = None
        self.hanging = False

    async def _enter(self) -> None:
        if self.hanging:
            self.hung_calls += 1
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            self.failed_calls += 1
            raise type(self.failure)(*self.failure.args)

    async def _enter_write(self) -> None:
        await self._enter()
        if self.write_gate is not None:
            await self.write_gate.wait()
        await trio.sleep(self.write_delay)

    async def get(self, key: str) -> bytes | None:
        await self._enter()
        return await self.memory.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        await self._enter()
        self.get_many_calls.append(list(keys))
        if self.read_gate is not None:
            await self.read_gate.wait()
        return await self.memory.get_many(keys)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        await self._enter_write()
        self.set_many_calls.append((dict(items), ttl))
        await self.memory.set_many(items, ttl)

    async def delete(self, key: str) -> None:
        await self._enter_write()
        self.deleted.append(key)
        await self.memory.delete(key)

    async def entry(self, key: str) -> sq.StoredEntry | None:
        """Decode the entry stored under ``key`` (bypassing every switch), or ``None``."""
        raw = await self.memory.get(key)
        return None if raw is None else sq.unpack_entry(raw, sq.serializers.json)

    def written_ttls(self) -> dict[str, float | None]:
        """The TTL each key was last written with."""
        return {key: ttl for items, ttl in self.set_many_calls for key in items}
