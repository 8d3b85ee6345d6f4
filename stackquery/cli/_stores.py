"""Stores as the command line sees them: opened from a path or URL, walked under a prefix.

The command line reads L2 without a client: it walks the store's keys under
the key prefix, decodes each key back to its query key and reads each entry's
envelope (serializer name, fetch time, invalidated flag) without needing the
serializer that wrote it.  Anything that is not a stackquery entry is reported
as foreign or corrupt, never a crash.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import orjson
import redis.exceptions

from backends import (
    FileStorage,
    RedisClient,
    RedisClusterClient,
    SQLiteStorage,
    StorageError,
    StorageUnavailableError,
    redis_client_from_url,
    scan_names,
)

from .. import serializers
from .._entry import CorruptEntryError, StoredEntry, flag_invalidated, read_envelope
from .._errors import InvalidKeyError
from .._keys import QueryKey, canonical_key, hash_matches, prefix_hash
from ._output import CommandError

StoreKind = Literal["sqlite", "file", "redis"]

#: The key prefix in front of the canonical keys when none is given: the client's
#: default ``key_prefix``, and for Redis ``RedisStorage``'s default prefix before it.
DEFAULT_PREFIXES: Final[dict[StoreKind, str]] = {"sqlite": "sq:", "file": "sq:", "redis": "sq:"}

# The table SQLiteStorage keeps its entries in: a file without it is not a store.
_SQLITE_TABLE = "stackquery_entries"
_REDIS_TIMEOUT = 5.0
_SCAN_COUNT = 1000
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
_LEASE_PREFIX = "lease:"


@attrs.frozen
class StoreTarget:
    """Which store a command works on, as given on the command line."""

    kind: StoreKind
    """``sqlite``, ``file`` or ``redis``."""
    location: str
    """The SQLite file, the file store's directory, or the Redis URL."""

    def describe(self) -> str:
        """Return the store in words, with any password in a URL hidden."""
        if self.kind == "sqlite":
            return f"SQLite store {self.location}"
        if self.kind == "file":
            return f"file store {self.location}"
        return f"Redis {redact_url(self.location)}"


@attrs.frozen
class RawEntry:
    """One key of the store under the prefix, as stored."""

    name: str
    """The key in the store (prefix included)."""
    value: bytes
    ttl: float | None
    """Seconds left before the store expires it; ``None``: no expiry."""
    unreadable: str | None = None
    """Why the value could not be read as bytes (a Redis hash ...), if so."""


EntryStatus = Literal["ok", "lease", "foreign", "corrupt"]


@attrs.frozen
class EntryInfo:
    """What one key under the prefix holds."""

    name: str
    """The key in the store (prefix included)."""
    key: str | None
    """The canonical query key (JSON text), or ``None`` when the name does not hold one."""
    size: int
    """The stored value's length in bytes."""
    ttl: float | None
    """Seconds left before the store expires it; ``None``: no expiry."""
    status: EntryStatus
    """``ok``: a stackquery entry; ``lease``: a fleet lease key; ``foreign``: not
    stackquery's; ``corrupt``: a damaged stackquery entry."""
    serializer: str | None = None
    data_updated_at: float | None = None
    """Wall-clock seconds at which the value was fetched (``ok`` entries only)."""
    invalidated: bool | None = None
    problem: str | None = None
    """Why the entry is foreign or corrupt."""


@attrs.frozen
class _OpaquePayload:
    """A serializer that keeps the payload as bytes: reads any binary entry's envelope."""

    name: str

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise TypeError(f"an opaque payload is bytes, not {type(value).__name__}")
        return value

    def loads(self, data: bytes) -> Any:
        return data


def read_entry(raw: bytes) -> tuple[StoredEntry, serializers.Serializer]:
    """Decode an entry's envelope whatever serializer wrote it.

    A text entry (the JSON serializer's) is decoded whole; a binary entry's
    payload is left as bytes, since its serializer may not be at hand (a
    pickle key, a protobuf class).

    Returns:
        The entry, and a serializer that writes it back the same way.

    Raises:
        CorruptEntryError: ``raw`` is not a well-formed stackquery entry.
    """
    entry = read_envelope(raw)
    if raw[:1] == b"{":
        return entry, serializers.json
    return entry, _OpaquePayload(entry.serializer)


def invalidated_copy(raw: bytes) -> bytes | None:
    """Return ``raw`` rewritten with its invalidated flag set, or ``None`` if already set.

    Raises:
        CorruptEntryError: ``raw`` is not a well-formed stackquery entry.
    """
    return flag_invalidated(raw)


def decode_key(text: str) -> str | None:
    """Return ``text`` if it is the canonical hash of a query key, else ``None``."""
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, list):
        return None
    try:
        _, canonical = canonical_key(_as_key(decoded))
    except InvalidKeyError:
        return None
    return text if canonical == text else None


def parse_key_prefix(text: str) -> str:
    """Return the canonical hash prefix of a query-key prefix written as JSON.

    Args:
        text: a JSON array such as ``["user"]`` or ``["user", 42]``.

    Raises:
        CommandError: ``text`` is not a JSON array that is a valid query key.
    """
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        decoded = None
    if not isinstance(decoded, list):
        raise CommandError(
            f"a key prefix is a JSON array such as '[\"user\"]', got {text!r}"
        ) from None
    try:
        return prefix_hash(_as_key(decoded))
    except InvalidKeyError as exc:
        raise CommandError(f"key prefix {text!r} is not a valid query key: {exc}") from None


def key_matches(key: str, hash_prefix: str) -> bool:
    """Whether the canonical ``key`` is under the query-key prefix ``hash_prefix``."""
    return hash_matches(key, hash_prefix, exact=False)


def describe_entry(entry: RawEntry, prefix: str) -> EntryInfo:
    """Classify one key under ``prefix`` and read its envelope."""
    rest = entry.name[len(prefix) :]
    size = len(entry.value)
    key = decode_key(rest)
    if entry.unreadable is not None:
        return EntryInfo(entry.name, key, size, entry.ttl, "foreign", problem=entry.unreadable)
    if key is None:
        if rest.startswith(_LEASE_PREFIX) and decode_key(rest[len(_LEASE_PREFIX) :]):
            return EntryInfo(entry.name, None, size, entry.ttl, "lease")
        return EntryInfo(
            entry.name, None, size, entry.ttl, "foreign", problem="not a canonical query key"
        )
    try:
        stored, _ = read_entry(entry.value)
    except CorruptEntryError as exc:
        status: EntryStatus = "foreign" if exc.reason == "foreign" else "corrupt"
        return EntryInfo(
            entry.name,
            key,
            size,
            entry.ttl,
            status,
            serializer=exc.found_serializer,
            problem=str(exc),
        )
    return EntryInfo(
        entry.name,
        key,
        size,
        entry.ttl,
        "ok",
        serializer=stored.serializer,
        data_updated_at=stored.data_updated_at,
        invalidated=stored.invalidated,
    )


def _as_key(decoded: Any) -> QueryKey:
    # JSON arrays come back as lists; a query key holds tuples.
    return tuple(_as_key(item) if isinstance(item, list) else item for item in decoded)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    # The hosts as written: a redis+sentinel:// URL names several, which
    # urlsplit cannot read a port from.
    hosts = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


class LocalStore:
    """A SQLite or file store opened for the command line (after checking it exists)."""

    def __init__(self, target: StoreTarget) -> None:
        self.target = target
        self.store: SQLiteStorage | FileStorage
        if target.kind == "sqlite":
            _check_sqlite_store(target.location)
            self.store = SQLiteStorage(target.location)
        elif target.kind == "file":
            if not os.path.isdir(target.location):
                what = "is not a directory" if os.path.exists(target.location) else "does not exist"
                raise CommandError(f"no file store at {target.location}: the path {what}")
            self.store = FileStorage(target.location)
        else:
            raise CommandError(f"a {target.kind} store is not a local store")

    async def walk(self, prefix: str) -> AsyncGenerator[RawEntry, None]:
        """Yield every live key under ``prefix``.

        Raises:
            CommandError: the store failed.
        """
        try:
            async for name, value, ttl in self.store.scan(prefix):
                yield RawEntry(name, value, ttl)
        except StorageError as exc:
            raise CommandError(f"cannot read the {self.target.describe()}: {exc}") from exc

    async def rewrite(self, entry: RawEntry, value: bytes) -> bool:
        """Store ``value`` under ``entry.name`` with the TTL it had left.

        Returns:
            False when the entry expired meanwhile (nothing is written).

        Raises:
            CommandError: the store failed.
        """
        if entry.ttl is not None and not (entry.ttl > 0 and math.isfinite(entry.ttl)):
            return False
        try:
            await self.store.set(entry.name, value, ttl=entry.ttl)
        except StorageError as exc:
            raise CommandError(f"cannot write to the {self.target.describe()}: {exc}") from exc
        return True

    async def aclose(self) -> None:
        """Close the store."""
        await self.store.aclose()


def _check_sqlite_store(path: str) -> None:
    # Opened read-only first: SQLiteStorage would create a missing file and add
    # its table to any database, which a look must never do.
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise CommandError(f"no SQLite store at {path}: the path {what}")
    uri = f"file:{urllib.parse.quote(str(Path(path).resolve()))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True)
        try:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_SQLITE_TABLE,)
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise CommandError(f"{path} is not a readable SQLite database: {exc}") from None
    if found is None:
        raise CommandError(f"{path} is not a stackquery SQLite store (no {_SQLITE_TABLE} table)")


@asynccontextmanager
async def open_local_store(target: StoreTarget) -> AsyncIterator[LocalStore]:
    """Open a SQLite or file store for a command; closed when the block ends.

    Raises:
        CommandError: the path does not exist, is of the wrong kind, or is not a store.
    """
    local = LocalStore(target)
    try:
        yield local
    finally:
        await local.aclose()


async def walk_redis(url: str, prefix: str) -> AsyncGenerator[RawEntry, None]:
    """Yield every key under ``prefix`` in the Redis at ``url`` (``SCAN``, then ``GET`` + ``PTTL``).

    On a cluster (``redis+cluster://``) every master is walked; a master that
    cannot be walked to its end is an error, never a shorter list.  A key
    yielded twice by a walk (a master lost midway is walked again on its
    successor) is yielded once.  A key that is not a string (a hash, a list)
    is yielded with an empty value and so reads as foreign.

    Raises:
        CommandError: the URL is not valid, or Redis could not be reached or failed.
    """
    try:
        client = redis_client_from_url(url, timeout=_REDIS_TIMEOUT)
    except ValueError as exc:
        raise CommandError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    where = redact_url(url)
    pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
    seen: set[bytes] = set()
    try:
        async with client:
            async for names in scan_names(client, pattern, count=_SCAN_COUNT):
                fresh = [name for name in names if name not in seen]
                if isinstance(client, RedisClusterClient):
                    seen.update(fresh)
                for entry in await _read_redis(client, fresh):
                    yield entry
    except StorageUnavailableError as exc:
        raise CommandError(f"cannot reach Redis at {where}: {exc}") from exc
    except (StorageError, redis.exceptions.RedisError) as exc:
        raise CommandError(f"Redis at {where} failed: {exc}") from exc


async def _read_redis(
    client: RedisClient | RedisClusterClient, names: Sequence[bytes]
) -> list[RawEntry]:
    if not names:
        return []
    commands = [command for name in names for command in (("GET", name), ("PTTL", name))]
    replies = await client.pipeline(commands, raise_on_error=False)
    entries: list[RawEntry] = []
    for name, value, pttl in zip(names, replies[::2], replies[1::2], strict=True):
        if value is None or pttl == -2:  # gone between SCAN and GET
            continue
        ttl = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
        text = name.decode("utf-8", "replace")
        if isinstance(value, bytes):
            entries.append(RawEntry(text, value, ttl))
        else:  # WRONGTYPE: a hash, a list ... under the prefix is not an entry of ours
            entries.append(RawEntry(text, b"", ttl, unreadable=f"not a string value: {value}"))
    return entries
