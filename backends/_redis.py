"""The shared byte store: entries in Redis, namespaced under a key prefix."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Protocol, cast, final

import trio

from ._base import ByteStore, Reading
from ._cluster_topology import is_cluster_url
from ._errors import StorageError, map_storage_errors
from ._redis_client import DEFAULT_PING_INTERVAL, DEFAULT_TIMEOUT, RedisClient, RedisReplyError
from ._redis_cluster import RedisClusterClient, scan_names
from ._resp import CommandArg, RedisReply
from ._validation import all_bytes_or_none, check_key, check_keys, check_prefix

if TYPE_CHECKING:
    import redis.asyncio

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
_SCAN_COUNT = 1000
_DEFAULT_BATCH_SIZE = 500
_UNAVAILABLE: tuple[type[BaseException], ...] = (OSError, trio.BrokenResourceError)
"""Errors of the trio-native client that mean Redis could not be reached."""


class RedisCommands(Protocol):
    """What :class:`RedisStorage` needs from a Redis client."""

    async def execute(self, *args: CommandArg) -> RedisReply:
        """Run one command and return its reply."""
        ...

    async def pipeline(
        self, commands: Iterable[Sequence[CommandArg]], *, raise_on_error: bool = True
    ) -> list[RedisReply]:
        """Run several commands back to back and return their replies."""
        ...

    async def aclose(self) -> None:
        """Release the client's connections."""
        ...


@final
class RedisStorage(ByteStore):
    """Entries in Redis under ``prefix``, shared by every process that uses the server.

    Keys are stored as ``prefix + key``; nothing outside the prefix is ever
    read, written or deleted (no ``KEYS``, no ``FLUSHDB``: :meth:`delete_prefix`
    walks the namespace with ``SCAN`` and removes with ``UNLINK``).  TTLs are
    Redis's own (``SET ... PX``), so they run on the server's clock.

    ``url_or_client`` decides the connection:

    * a URL (``redis://``, ``rediss://``, ``unix://``, or
      ``redis+sentinel://host:port[,host:port...]/service_name[/db]``, the
      master that the sentinels name, followed through failovers): a
      :class:`RedisClient` of this store's own, trio-native and automatically
      pipelined; closed by :meth:`aclose`.  This is the fast path.
    * a ``redis+cluster://host:port[,host:port...]`` URL (``rediss+cluster://``:
      TLS): a :class:`RedisClusterClient` of this store's own, routing each key
      to its master; batch operations are split per slot and
      :meth:`delete_prefix` walks every master.  Closed by :meth:`aclose`.
    * a :class:`RedisClient` or :class:`RedisClusterClient`: used as is, and
      left open by :meth:`aclose` (useful to share one connection with pub/sub
      or lease code).
    * a ``redis.asyncio.Redis``: commands go through trio-asyncio, which must
      be running (``async with trio_asyncio.open_loop():``).  About three times
      slower per unbatched command; the client's own timeouts apply.  Left open
      by :meth:`aclose`.  trio-asyncio is imported only here, when such a
      client is given (importing it patches asyncio for the whole process).

    The store runs no task and needs no nursery: it can be made anywhere and
    used from any task; ``async with RedisStorage(url) as store:`` or
    :meth:`aclose` releases the connection.  Cancelled, an operation whose
    command was already written still runs on the server (a cancelled ``set``
    may have taken effect); the connection stays correct for everybody else.

    Args:
        url_or_client: where the entries live (see above).
        prefix: the namespace of every key.
        timeout: seconds each operation may take, for a URL only (a client
            passed in has its own); ``None`` waits forever.
        ping_interval: for a URL only: how long a subscription on the
            store's client (the fleet's, ``bg.read``'s) may hear nothing
            before it checks the connection with ``PING``; a deaf one is
            found within twice this (see :class:`RedisClient`).  ``None``
            never pings.
        batch_size: keys per ``MGET`` and commands per pipeline in batch operations.

    Raises:
        TypeError: ``url_or_client`` is none of the above, or ``prefix`` is not ``str``.
        ValueError: the URL, ``timeout``, ``ping_interval`` or ``batch_size`` is not valid.
    """

    cancel_safe_reads: ClassVar[bool] = True
    """``get`` honours trio cancellation at once (a reply that comes later is
    dropped), so a caller may read from its own task rather than through a
    batching task."""

    def __init__(
        self,
        url_or_client: str | RedisClient | RedisClusterClient | redis.asyncio.Redis,
        *,
        prefix: str = "",
        timeout: float | None = DEFAULT_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        batch_size: int = _DEFAULT_BATCH_SIZE,
    ) -> None:
        self._prefix = check_prefix(prefix)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        self._batch_size = batch_size
        self._owns_client = isinstance(url_or_client, str)
        self._redis: RedisCommands
        self._unavailable = _UNAVAILABLE
        self._reply_errors: tuple[type[Exception], ...] = (RedisReplyError,)
        self._translations: dict[str, _Translation] = {}
        if isinstance(url_or_client, str) and is_cluster_url(url_or_client):
            self._redis = RedisClusterClient.from_url(
                url_or_client, timeout=timeout, ping_interval=ping_interval
            )
        elif isinstance(url_or_client, str):
            self._redis = RedisClient.from_url(
                url_or_client, timeout=timeout, ping_interval=ping_interval
            )
        elif isinstance(url_or_client, RedisClient | RedisClusterClient):
            self._redis = url_or_client
        elif _is_asyncio_client(url_or_client):
            from . import _redis_asyncio

            self._redis = _redis_asyncio.AsyncioRedisCommands(url_or_client)
            self._unavailable += _redis_asyncio.UNAVAILABLE_ERRORS
            self._reply_errors += _redis_asyncio.REPLY_ERRORS
        else:
            raise TypeError(
                "url_or_client must be a redis URL, a RedisClient or a redis.asyncio.Redis, "
                f"not {type(url_or_client).__name__}"
            )

    @property
    def prefix(self) -> str:
        """The namespace every key is stored under."""
        return self._prefix

    @property
    def redis(self) -> RedisCommands:
        """The client the store sends its commands through."""
        return self._redis

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key`` (one ``GET``).

        Returns:
            The value, or ``None`` if ``key`` is absent or expired.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` holds a lone surrogate.
            StorageClosedError: the store was closed.
            StorageUnavailableError: Redis could not be reached or did not
                answer within the timeout.
            StorageError: Redis failed otherwise; the cause is chained.
        """
        name = self._prefix + check_key(key)
        self._check_open("get")
        with self._translating("get"):
            return _as_value(await self._redis.execute("GET", name))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the values stored under ``keys`` (``MGET``s of ``batch_size`` keys, pipelined).

        Returns:
            One value (or ``None``) per key, in the order of ``keys``.

        Raises:
            TypeError: ``keys`` is a ``str`` or not a sequence, or holds a non-``str``.
            ValueError, StorageClosedError, StorageUnavailableError,
            StorageError: as for :meth:`get`.
        """
        names = check_keys(keys)
        if prefix := self._prefix:  # "" + key is key, at the cost of an addition per key
            # An addition in a comprehension: a third cheaper than map(prefix.__add__, ...).
            names = [prefix + name for name in names]
        self._check_open("get_many")
        with self._translating("get_many"):
            if not names:
                await trio.lowlevel.checkpoint()
                return []
            size = self._batch_size
            chunks = [names[i : i + size] for i in range(0, len(names), size)]
            replies = await self._redis.pipeline([("MGET", *chunk) for chunk in chunks])
            values: list[bytes | None] = []
            for reply in replies:
                if not isinstance(reply, list):
                    raise StorageError(
                        f"unexpected reply to MGET: {reply!r:.100}", backend="RedisStorage"
                    )
                if all_bytes_or_none(reply):
                    values += cast(list[bytes | None], reply)  # judged in C: as they are
                else:
                    values.extend(_as_value(value) for value in reply)
            return values

    async def _read(self, keys: list[str]) -> list[Reading]:
        # GET and PTTL of each key back to back in one pipeline.  Not atomic:
        # an entry that expires between the two reads as absent.
        readings: list[Reading] = []
        for start in range(0, len(keys), self._batch_size):
            commands: list[tuple[CommandArg, ...]] = []
            for key in keys[start : start + self._batch_size]:
                name = self._prefix + key
                commands += [("GET", name), ("PTTL", name)]
            replies = await self._redis.pipeline(commands)
            for value, pttl in zip(replies[::2], replies[1::2], strict=True):
                readings.append(_reading(_as_value(value), pttl))
        return readings

    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        expiry: tuple[CommandArg, ...] = ()
        if ttl is not None:
            expiry = ("PX", max(1, math.ceil(ttl * 1000)))
        commands = [("SET", self._prefix + key, value, *expiry) for key, value in items.items()]
        if len(commands) == 1:
            await self._redis.execute(*commands[0])
            return
        for start in range(0, len(commands), self._batch_size):
            await self._redis.pipeline(commands[start : start + self._batch_size])

    async def _delete(self, key: str) -> None:
        await self._redis.execute("UNLINK", self._prefix + key)

    async def _delete_prefix(self, prefix: str) -> int:
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._prefix + prefix) + "*"
        if isinstance(self._redis, RedisClusterClient):
            return await _delete_on_every_master(self._redis, pattern)
        removed = 0
        cursor: int | bytes = 0
        while True:
            reply = await self._redis.execute(
                "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
            )
            if not isinstance(reply, list | tuple) or len(reply) != 2:
                raise StorageError(
                    f"unexpected reply to SCAN: {reply!r:.100}", backend="RedisStorage"
                )
            next_cursor, names = reply
            if not isinstance(names, list) or not all(
                isinstance(name, bytes | str) for name in names
            ):
                raise StorageError(
                    f"unexpected reply to SCAN: {reply!r:.100}", backend="RedisStorage"
                )
            if names:
                count = await self._redis.execute("UNLINK", *cast(list[bytes | str], names))
                assert isinstance(count, int)
                removed += count
            cursor = int(next_cursor)  # type: ignore[arg-type]
            if cursor == 0:
                return removed

    async def _close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    def _translating(self, operation: str) -> AbstractContextManager[None]:
        """Translate errors as every store does, naming this store in its client's errors.

        One translation per operation, made once: it holds no state of a call
        (a ``get`` is a cold key's read, and pays for nothing it need not).
        """
        translation = self._translations.get(operation)
        if translation is None:
            translation = _Translation(operation, self._unavailable, self._reply_errors)
            self._translations[operation] = translation
        return translation


class _Translation:
    """``map_storage_errors`` for RedisStorage, free on the way in (the hot path).

    The success path costs a plain ``__enter__``/``__exit__``; only a failure
    goes through ``map_storage_errors``, after two Redis-specific steps: an
    error reply is said in words (redis-py's repr hides the server's
    message), and a StorageError of the client is relabelled as this store's,
    same kind, with the root cause chained.
    """

    __slots__ = ("_operation", "_reply_errors", "_unavailable")

    def __init__(
        self,
        operation: str,
        unavailable: tuple[type[BaseException], ...],
        reply_errors: tuple[type[Exception], ...],
    ) -> None:
        self._operation = operation
        self._unavailable = unavailable
        self._reply_errors = reply_errors

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception):  # success, or Cancelled: nothing to translate
            return
        operation = self._operation
        with map_storage_errors("RedisStorage", operation, unavailable=self._unavailable):
            if isinstance(exc, self._reply_errors):
                error = exc.error if isinstance(exc, RedisReplyError) else exc
                raise StorageError(
                    f"RedisStorage.{operation} failed: {type(error).__name__}: {error}",
                    backend="RedisStorage",
                    operation=operation,
                ) from error
            if isinstance(exc, StorageError) and exc.backend != "RedisStorage":
                relabelled = type(exc)(
                    f"RedisStorage.{operation}: {exc}", backend="RedisStorage", operation=operation
                )
                raise relabelled from exc.__cause__ or exc
            raise exc


async def _delete_on_every_master(redis: RedisClusterClient, pattern: str) -> int:
    """``SCAN`` every master of a cluster and ``UNLINK`` what matches (per slot)."""
    removed = 0
    async for names in scan_names(redis, pattern, count=_SCAN_COUNT):
        count = await redis.execute("UNLINK", *names)
        assert isinstance(count, int)
        removed += count
    return removed


def _is_asyncio_client(candidate: object) -> bool:
    """Whether ``candidate`` is a ``redis.asyncio.Redis``, without importing redis-py.

    Such a client exists only once its module was imported, so a URL, a
    RedisClient or a wrong type is told apart at no import cost.
    """
    module = sys.modules.get("redis.asyncio")
    return module is not None and isinstance(candidate, module.Redis)


def _as_value(reply: RedisReply | str) -> bytes | None:
    if reply is None or isinstance(reply, bytes):
        return reply
    if isinstance(reply, str):  # a redis.asyncio client that decodes responses
        return reply.encode("utf-8")
    raise StorageError(f"unexpected reply to GET: {reply!r:.100}", backend="RedisStorage")


def _reading(value: bytes | None, pttl: RedisReply) -> Reading:
    if not isinstance(pttl, int):
        raise StorageError(f"unexpected reply to PTTL: {pttl!r:.100}", backend="RedisStorage")
    if value is None or pttl == -2:  # -2: gone by the time PTTL ran
        return (None, None)
    if pttl == -1:  # no expiry
        return (value, None)
    return (value, pttl / 1000)
