"""The fleet's messages on the wire: how they are encoded, and what a received one must be.

Anyone who can publish on the channel can send anything, so every message
received is checked field by field before it reaches the code that applies
it: its size, the node that sent it, the operation, every key hash (a
canonical key hash, as :func:`~stackquery._keys.canonical_key` writes them),
an invalidation's prefix (one that a canonical key hash can start with), and
every timestamp (finite seconds, not negative).  A message that fails a
check raises :class:`MalformedMessageError`; the fleet counts it as
rejected.

Each message is one JSON object::

    {"n": node, "op": "inv", "p": hash prefix or null, "x": exact, "k": [key hash, ...]}
    {"n": node, "op": "del", "k": [key hash, ...]}
    {"n": node, "op": "upd", "k": [[key hash, data_updated_at], ...]}
    {"n": node, "op": "all"}      (messages were lost: take everything held as stale)

An operation this version does not know is a newer client's: it is received
and ignored.  Senders split their keys so that no message they send breaks
the limits below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Final

import attrs
import orjson

from .._keys import canonical_key, key_from_hash

#: Bytes a received message may have.
MAX_MESSAGE_BYTES: Final = 1 << 20
#: Keys (or key, time pairs) one message may name.
MAX_KEYS: Final = 1000
#: Characters of one key hash (or prefix); a longer key is not announced.
MAX_HASH_CHARS: Final = 8192
#: Characters of a node id (``secrets.token_hex(8)`` has 16; the CLI's a few more).
MAX_NODE_CHARS: Final = 64
_MAX_OP_CHARS: Final = 32
# A chunk of hashes stays under half the message limit: JSON escapes grow text.
_CHUNK_CHARS: Final = MAX_MESSAGE_BYTES // 8


class MalformedMessageError(ValueError):
    """A message received on the fleet channel is not one this version can apply."""


@attrs.frozen
class Invalidate:
    """Keys were invalidated: every key under ``prefix``, or exactly ``hashes``."""

    node: str
    prefix: str | None
    """A canonical hash prefix (the key ``()`` is ``"["``), or ``None``: see ``hashes``."""
    exact: bool
    """Only the key of ``prefix`` itself, not the keys under it."""
    hashes: tuple[str, ...]


@attrs.frozen
class Delete:
    """Keys were deleted from L2."""

    node: str
    hashes: tuple[str, ...]


@attrs.frozen
class Update:
    """New data for keys landed in L2: (key hash, data_updated_at) pairs."""

    node: str
    items: tuple[tuple[str, float], ...]


@attrs.frozen
class StaleAll:
    """The sender lost messages it could not publish: everything held may be stale."""

    node: str


@attrs.frozen
class Unknown:
    """An operation this version does not know (a newer client's): received, ignored."""

    node: str
    op: str


Message = Invalidate | Delete | Update | StaleAll | Unknown


def encode_invalidate(
    prefix: str | None, *, exact: bool, hashes: Sequence[str], node: str
) -> bytes:
    """Encode an invalidation: of every key under ``prefix`` (a hash prefix), or of ``hashes``."""
    return orjson.dumps({"n": node, "op": "inv", "p": prefix, "x": exact, "k": list(hashes)})


def encode_delete(hashes: Sequence[str], *, node: str) -> bytes:
    """Encode a deletion of ``hashes`` from L2."""
    return orjson.dumps({"n": node, "op": "del", "k": list(hashes)})


def encode_update(items: Sequence[tuple[str, float]], *, node: str) -> bytes:
    """Encode new data for these (key hash, data_updated_at) pairs."""
    return orjson.dumps({"n": node, "op": "upd", "k": [list(item) for item in items]})


def encode_stale_all(*, node: str) -> bytes:
    """Encode "take everything you hold as stale" (messages were lost)."""
    return orjson.dumps({"n": node, "op": "all"})


def chunks(hashes: Sequence[str]) -> Iterator[list[int]]:
    """Split ``hashes`` into runs a message can carry; yield each run's indexes.

    A hash longer than :data:`MAX_HASH_CHARS` is in no run: no receiver would
    accept a message naming it.
    """
    run: list[int] = []
    size = 0
    for index, key_hash in enumerate(hashes):
        if len(key_hash) > MAX_HASH_CHARS:
            continue
        if run and (len(run) == MAX_KEYS or size + len(key_hash) > _CHUNK_CHARS):
            yield run
            run, size = [], 0
        run.append(index)
        size += len(key_hash)
    if run:
        yield run


def parse_message(data: bytes) -> Message:
    """Check ``data`` field by field and return the message it holds.

    Raises:
        MalformedMessageError: ``data`` is too large, not a JSON object, or a
            field is missing, mistyped, too long, or not a canonical key hash
            (or hash prefix) where one belongs; the message says which.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"message of {len(data)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedMessageError("not JSON") from None
    if type(message) is not dict:
        raise MalformedMessageError("not a JSON object")
    node, op = message.get("n"), message.get("op")
    if type(node) is not str or not 0 < len(node) <= MAX_NODE_CHARS:
        raise MalformedMessageError("node 'n' is not a short string")
    if type(op) is not str or len(op) > _MAX_OP_CHARS:
        raise MalformedMessageError("operation 'op' is not a short string")
    keys = message.get("k")
    if op == "inv":
        prefix, exact = message.get("p"), message.get("x", False)
        if prefix is not None and not is_hash_prefix(prefix):
            raise MalformedMessageError("prefix 'p' is not a key hash prefix")
        if type(exact) is not bool:
            raise MalformedMessageError("'x' is not a boolean")
        return Invalidate(node, prefix, exact, _hashes(keys))
    if op == "del":
        return Delete(node, _hashes(keys))
    if op == "upd":
        return Update(node, tuple(_update_item(item) for item in _bounded_list(keys)))
    if op == "all":
        return StaleAll(node)
    return Unknown(node, op)


def is_key_hash(text: Any) -> bool:
    """Whether ``text`` is a canonical key hash of at most :data:`MAX_HASH_CHARS` characters."""
    if type(text) is not str or not 2 <= len(text) <= MAX_HASH_CHARS or text[0] != "[":
        return False
    try:
        return canonical_key(key_from_hash(text))[1] == text
    except Exception:  # not JSON, not a key, nested past the recursion limit
        return False


def is_hash_prefix(text: Any) -> bool:
    """Whether ``text`` is what every hash of some key prefix starts with (``"["``: every key)."""
    return type(text) is str and len(text) < MAX_HASH_CHARS and is_key_hash(text + "]")


def _bounded_list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise MalformedMessageError("keys 'k' is not a list")
    if len(value) > MAX_KEYS:
        raise MalformedMessageError(f"{len(value)} keys, more than {MAX_KEYS}")
    return value


def _hashes(value: Any) -> tuple[str, ...]:
    hashes = _bounded_list(value)
    for key_hash in hashes:
        if not is_key_hash(key_hash):
            raise MalformedMessageError("a key in 'k' is not a canonical key hash")
    return tuple(hashes)


def _update_item(item: Any) -> tuple[str, float]:
    if type(item) is not list or len(item) != 2:
        raise MalformedMessageError("an update is not a [key hash, time] pair")
    key_hash, updated_at = item
    if not is_key_hash(key_hash):
        raise MalformedMessageError("an update's key is not a canonical key hash")
    if type(updated_at) is not float and type(updated_at) is not int:
        raise MalformedMessageError("an update's time is not a number")
    updated_at = float(updated_at)
    if not (math.isfinite(updated_at) and updated_at >= 0.0):
        raise MalformedMessageError("an update's time is not finite seconds >= 0")
    return key_hash, updated_at


__all__ = [
    "MAX_HASH_CHARS",
    "MAX_KEYS",
    "MAX_MESSAGE_BYTES",
    "MAX_NODE_CHARS",
    "Delete",
    "Invalidate",
    "MalformedMessageError",
    "Message",
    "StaleAll",
    "Unknown",
    "Update",
    "chunks",
    "encode_delete",
    "encode_invalidate",
    "encode_stale_all",
    "encode_update",
    "is_hash_prefix",
    "is_key_hash",
    "parse_message",
]
