"""The L2 entry: a versioned envelope around one serialized value.

An entry carries a format version, the serializer's name, the time its data was
fetched (wall-clock seconds), an "invalidated" flag and the payload.  It has two
frames, told apart by the first byte:

**Text frame** (the built-in :data:`~stackquery.serializers.json` only).  One
JSON object, UTF-8 text, so a text-only store works unchanged::

    {"sq":1,"s":"json","t":1712345678.25,"i":false,"d":<the value, as JSON>}

``"sq"`` is the magic key and its value the format version.  The value is
encoded in the same ``orjson.dumps`` call as the envelope and decoded in the
same ``orjson.loads``: no payload is encoded twice.  This is the fast path.

**Binary frame** (every other serializer).  A fixed header, the name, the
payload as the serializer wrote it::

    offset  size  field
    0       3     magic b"\\xffSQ" (0xFF never occurs in UTF-8 text)
    3       1     format version (1)
    4       1     flags: bit 0 = invalidated, other bits 0
    5       8     data_updated_at, IEEE 754 double, big-endian
    13      4     payload length, unsigned big-endian
    17      1     serializer name length n
    18      n     serializer name, UTF-8
    18+n    ...   payload (exactly "payload length" bytes)

Binary serializers are picked for size, so their payload is not inflated by
base64; the length field makes a truncated payload detectable even for formats
(protobuf) that would decode a prefix without complaint.

Anything that is not a well-formed entry of the expected serializer raises
:class:`CorruptEntryError`; the client treats it as a miss, counts and logs it.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs
import orjson

from ._errors import StackqueryError
from .serializers._core import (
    _JSON_OPTIONS,
    JsonSerializer,
    SerializationError,
    Serializer,
    _json_error,
    _type_name,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_CLOCK_SKEW",
    "CorruptEntryError",
    "CorruptReason",
    "StoredEntry",
    "bound_future",
    "pack_entry",
    "try_unpack_entry",
    "unpack_entry",
]

#: The entry format version written by :func:`pack_entry` and read by :func:`unpack_entry`.
FORMAT_VERSION: Final = 1

#: Seconds an entry's ``data_updated_at`` may be ahead of this process's clock
#: (another machine's clock runs ahead).  Past it the time is not believed: see
#: :func:`bound_future`.
MAX_CLOCK_SKEW: Final = 5.0

_MAGIC: Final = b"\xffSQ"
_HEADER: Final = struct.Struct(">3sBBdIB")
_FLAG_INVALIDATED: Final = 0x01
_MAX_PAYLOAD: Final = 0xFFFFFFFF
_TEXT_PREFIX: Final = b'{"sq":'

_logger = logging.getLogger("stackquery.entry")

#: Why an entry was rejected:
#: ``foreign`` — not a stackquery entry at all;
#: ``unsupported-version`` — a stackquery entry of another format version;
#: ``truncated`` — shorter than its own header or length field says;
#: ``malformed`` — a stackquery entry whose envelope is damaged;
#: ``serializer-mismatch`` — written by another serializer than the one given;
#: ``undecodable-payload`` — the serializer could not decode the payload.
CorruptReason = Literal[
    "foreign",
    "unsupported-version",
    "truncated",
    "malformed",
    "serializer-mismatch",
    "undecodable-payload",
]


class CorruptEntryError(StackqueryError, ValueError):
    """Bytes read from L2 are not a usable entry for the configured serializer.

    Attributes:
        reason: one of :data:`CorruptReason`.
        serializer: the name of the serializer the caller expected.
        found_serializer: the name stored in the entry, when it could be read.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: CorruptReason,
        serializer: str,
        found_serializer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason: CorruptReason = reason
        self.serializer = serializer
        self.found_serializer = found_serializer


@attrs.frozen
class StoredEntry:
    """One entry decoded from L2."""

    value: Any
    """The cached value, as the serializer decoded it."""
    data_updated_at: float
    """Wall-clock seconds at which the value was fetched."""
    invalidated: bool
    """Whether the entry was invalidated when it was written."""
    serializer: str
    """The name of the serializer that wrote it."""


def _check_time(data_updated_at: float) -> float:
    if type(data_updated_at) is not float:
        if type(data_updated_at) is not int:
            raise TypeError(
                f"data_updated_at must be a float of seconds, got {_type_name(data_updated_at)}"
            )
        data_updated_at = float(data_updated_at)
    if not (math.isfinite(data_updated_at) and data_updated_at >= 0.0):
        raise ValueError(f"data_updated_at must be finite seconds >= 0, got {data_updated_at!r}")
    return data_updated_at


def pack_entry(
    value: Any,
    *,
    data_updated_at: float,
    serializer: Serializer,
    invalidated: bool = False,
) -> bytes:
    """Encode ``value`` and its metadata as one L2 entry.

    With the built-in JSON serializer the entry is UTF-8 JSON text; with any
    other it is a binary frame (see the module docstring).

    Args:
        value: the value to store.
        data_updated_at: wall-clock seconds at which ``value`` was fetched.
        serializer: the serializer that encodes ``value`` (already checked by
            :func:`~stackquery.serializers.as_serializer`).
        invalidated: whether the entry is stale by invalidation.

    Returns:
        The entry's bytes.

    Raises:
        SerializationError: the serializer cannot encode ``value``, raised an
            error of its own (chained as ``__cause__``), returned something
            other than bytes, or returned more than 4 GiB.
        TypeError: ``data_updated_at`` is not an int or float.
        ValueError: ``data_updated_at`` is negative, nan or infinite, or the
            serializer's name is longer than 255 bytes.
    """
    t = _check_time(data_updated_at)
    if type(serializer) is JsonSerializer:
        envelope = {"sq": FORMAT_VERSION, "s": "json", "t": t, "i": bool(invalidated), "d": value}
        try:
            return orjson.dumps(envelope, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _json_error(value, exc) from None
    name = serializer.name
    try:
        payload = serializer.dumps(value)
    except SerializationError:
        raise
    except Exception as exc:
        value_type = _type_name(value)
        raise SerializationError(
            f"serializer {name!r} failed to encode {value_type} value: {exc!r}",
            serializer=name,
            value_type=value_type,
        ) from exc
    if type(payload) is not bytes:
        if not isinstance(payload, (bytearray, memoryview)):
            raise SerializationError(
                f"serializer {name!r} returned {_type_name(payload)} from dumps, expected bytes",
                serializer=name,
                value_type=_type_name(value),
            )
        payload = bytes(payload)
    if len(payload) > _MAX_PAYLOAD:
        raise SerializationError(
            f"serializer {name!r} produced {len(payload)} bytes, more than an entry holds (4 GiB)",
            serializer=name,
            value_type=_type_name(value),
        )
    name_bytes = name.encode()
    if len(name_bytes) > 255:
        raise ValueError(f"a serializer's name must be at most 255 bytes: {name!r}")
    flags = _FLAG_INVALIDATED if invalidated else 0
    header = _HEADER.pack(_MAGIC, FORMAT_VERSION, flags, t, len(payload), len(name_bytes))
    return b"".join((header, name_bytes, payload))


def unpack_entry(raw: bytes | bytearray | memoryview | str, serializer: Serializer) -> StoredEntry:
    """Decode an entry written by :func:`pack_entry` with the same serializer.

    A ``str`` (from a store that returns text) is accepted; only a text-frame
    entry can survive such a store.

    Args:
        raw: the bytes (or text) read from L2.
        serializer: the serializer the entry is expected to have been written with.

    Returns:
        The decoded :class:`StoredEntry`.

    Raises:
        CorruptEntryError: ``raw`` is not a stackquery entry, is of another
            format version, is truncated or damaged, was written by another
            serializer, or its payload does not decode.  Nothing else is raised
            for any input bytes.
    """
    if isinstance(raw, str) or raw[:1] == b"{":
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _text_parse_error(raw, exc, serializer) from None
        # The fast path: exactly what pack_entry writes.  Anything else gets
        # the careful checks of _unpack_text, which name what is wrong.
        if type(envelope) is dict and len(envelope) == 5:
            try:
                version = envelope["sq"]
                name = envelope["s"]
                t = envelope["t"]
                invalidated = envelope["i"]
                value = envelope["d"]
            except KeyError:
                pass
            else:
                if (
                    version == FORMAT_VERSION
                    and type(version) is int
                    and name == "json"
                    and name == serializer.name
                    and type(t) is float
                    and t >= 0.0
                    and type(invalidated) is bool
                ):
                    return StoredEntry(value, t, invalidated, name)
        return _unpack_text(envelope, serializer)
    head = bytes(raw[:3])
    if head == _MAGIC:
        return _unpack_binary(raw, serializer)
    if head and _MAGIC.startswith(head):
        raise _corrupt("truncated", "entry is shorter than its header", serializer)
    if not head:
        raise _corrupt("truncated", "entry is empty", serializer)
    raise _corrupt("foreign", "not a stackquery entry", serializer)


def _corrupt(
    reason: CorruptReason, detail: str, serializer: Serializer, found: str | None = None
) -> CorruptEntryError:
    return CorruptEntryError(
        f"corrupt entry ({reason}): {detail}",
        reason=reason,
        serializer=serializer.name,
        found_serializer=found,
    )


def _text_parse_error(
    raw: bytes | bytearray | memoryview | str, exc: orjson.JSONDecodeError, serializer: Serializer
) -> CorruptEntryError:
    looks_ours = (
        raw.startswith('{"sq":') if isinstance(raw, str) else bytes(raw[:6]) == _TEXT_PREFIX
    )
    if looks_ours:
        return _corrupt("malformed", f"envelope is not valid JSON: {exc}", serializer)
    return _corrupt("foreign", "not a stackquery entry", serializer)


def _unpack_text(envelope: Any, serializer: Serializer) -> StoredEntry:
    if type(envelope) is not dict or "sq" not in envelope:
        raise _corrupt("foreign", "not a stackquery entry", serializer)
    version = envelope["sq"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise _corrupt("unsupported-version", f"format version {version!r}, expected 1", serializer)
    name = envelope.get("s")
    t = envelope.get("t")
    invalidated = envelope.get("i")
    if (
        type(name) is not str
        or (type(t) is not float and type(t) is not int)
        or type(invalidated) is not bool
        or "d" not in envelope
    ):
        raise _corrupt("malformed", "envelope fields are missing or mistyped", serializer)
    if name != serializer.name:
        raise _corrupt(
            "serializer-mismatch",
            f"written by {name!r}, expected {serializer.name!r}",
            serializer,
            found=name,
        )
    if name != "json":
        raise _corrupt("malformed", f"a text entry must be json, not {name!r}", serializer, name)
    if t < 0:
        raise _corrupt("malformed", f"data_updated_at is negative: {t!r}", serializer, name)
    return StoredEntry(
        value=envelope["d"], data_updated_at=float(t), invalidated=invalidated, serializer=name
    )


def _unpack_binary(raw: bytes | bytearray | memoryview, serializer: Serializer) -> StoredEntry:
    size = len(raw)
    if size < _HEADER.size:
        raise _corrupt("truncated", "entry is shorter than its header", serializer)
    _, version, flags, t, payload_size, name_size = _HEADER.unpack_from(raw)
    if version != FORMAT_VERSION:
        raise _corrupt("unsupported-version", f"format version {version}, expected 1", serializer)
    expected = _HEADER.size + name_size + payload_size
    if size < expected:
        raise _corrupt(
            "truncated", f"entry is {size} bytes, its header says {expected}", serializer
        )
    if size > expected:
        raise _corrupt(
            "malformed", f"entry is {size} bytes, its header says {expected}", serializer
        )
    if flags & ~_FLAG_INVALIDATED:
        raise _corrupt("malformed", f"unknown flags {flags:#04x}", serializer)
    if not (math.isfinite(t) and t >= 0.0):
        raise _corrupt("malformed", f"data_updated_at is {t!r}", serializer)
    try:
        name = bytes(raw[_HEADER.size : _HEADER.size + name_size]).decode()
    except UnicodeDecodeError:
        raise _corrupt("malformed", "serializer name is not UTF-8", serializer) from None
    if name != serializer.name:
        raise _corrupt(
            "serializer-mismatch",
            f"written by {name!r}, expected {serializer.name!r}",
            serializer,
            found=name,
        )
    payload = bytes(raw[_HEADER.size + name_size :])
    try:
        value = serializer.loads(payload)
    except Exception as exc:
        raise _corrupt(
            "undecodable-payload", f"{name} could not decode the payload: {exc!r}", serializer, name
        ) from exc
    return StoredEntry(
        value=value,
        data_updated_at=t,
        invalidated=bool(flags & _FLAG_INVALIDATED),
        serializer=name,
    )


def bound_future(
    entry: StoredEntry, now: float, on_future: Callable[[StoredEntry], object]
) -> StoredEntry:
    """Return ``entry``, unless it says it was fetched after ``now`` + :data:`MAX_CLOCK_SKEW`.

    A time that far ahead is a forgery or a broken clock: believed, it would
    keep the entry fresh until then, and no newer entry could replace it.
    Such an entry keeps its value, is stamped ``now`` and marked invalidated
    (served stale, refetched), and is handed to ``on_future`` (to count it).

    Args:
        entry: an entry read from L2.
        now: wall-clock seconds now.
        on_future: called with ``entry`` when its time is past the allowance.
    """
    if entry.data_updated_at <= now + MAX_CLOCK_SKEW:
        return entry
    on_future(entry)
    return attrs.evolve(entry, data_updated_at=now, invalidated=True)


def try_unpack_entry(
    raw: bytes | bytearray | memoryview | str | None,
    serializer: Serializer,
    on_corrupt: Callable[[CorruptEntryError], object] | None = None,
) -> StoredEntry | None:
    """Decode an entry, turning a corrupt one into a miss.

    Args:
        raw: what the store returned; ``None`` (absent) is a miss.
        serializer: the serializer the entry is expected to have been written with.
        on_corrupt: called with the :class:`CorruptEntryError` of a corrupt
            entry (to count and log it); when ``None`` the error is logged at
            WARNING on the ``stackquery.entry`` logger.

    Returns:
        The decoded entry, or ``None`` for a miss or a corrupt entry.

    Raises:
        Exception: whatever ``on_corrupt`` raises; nothing else.
    """
    if raw is None:
        return None
    try:
        return unpack_entry(raw, serializer)
    except CorruptEntryError as exc:
        if on_corrupt is None:
            _logger.warning("ignoring L2 entry: %s", exc)
        else:
            on_corrupt(exc)
        return None
