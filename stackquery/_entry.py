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

**Signed entries** (format version 2).  A serializer that signs (an
:class:`EntrySigner`: :func:`~stackquery.serializers.pickle`) writes the same
binary frame with version 2, and its payload (``signature + pickle``) is
signed over the entry's *context* followed by the pickle::

    magic, version 2, flags, data_updated_at, name length, name,
    key length (4 bytes, big-endian), key (UTF-8)

so an entry is bound to the L2 key it was written under and to its header: a
copy under another key, an edited time or a cleared invalidated flag fails
the signature.  Setting the invalidated flag without the secret (what
``stackquery invalidate`` does) is honoured: the signature is then checked
against the flag cleared, and the entry reads as invalidated.  A signed
entry of format 1 (signature over the pickle only) is refused as an
``unsupported-version``: the client counts it as corrupt, misses, and the
next fetch rewrites the key in format 2.  Unsigned serializers keep format 1.

Anything that is not a well-formed entry of the expected serializer raises
:class:`CorruptEntryError`; the client treats it as a miss, counts and logs it.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, cast, runtime_checkable

import attrs
import orjson

from ._errors import StackqueryError
from .serializers._core import (
    _JSON_OPTIONS,
    DeserializationError,
    SerializationError,
    Serializer,
    SignatureError,
    _json_error,
    _type_name,
    check_finite,
)
from .serializers._json import JsonSerializer
from .serializers._typed_json import TypedJsonSerializer

__all__ = [
    "FORMAT_VERSION",
    "MAX_CLOCK_SKEW",
    "SIGNED_FORMAT_VERSION",
    "CorruptEntryError",
    "CorruptReason",
    "EntrySigner",
    "StoredEntry",
    "bound_future",
    "flag_invalidated",
    "pack_entry",
    "plain_text_entry",
    "read_envelope",
    "try_unpack_entry",
    "unpack_entry",
]

#: The entry format version written by :func:`pack_entry` and read by :func:`unpack_entry`.
FORMAT_VERSION: Final = 1
#: The format version of entries written by an :class:`EntrySigner` (bound to their key).
SIGNED_FORMAT_VERSION: Final = 2

#: Seconds an entry's ``data_updated_at`` may be ahead of this process's clock
#: (another machine's clock runs ahead).  Past it the time is not believed: see
#: :func:`bound_future`.
MAX_CLOCK_SKEW: Final = 5.0

_MAGIC: Final = b"\xffSQ"
_HEADER: Final = struct.Struct(">3sBBdIB")
_SIGNED_HEAD: Final = struct.Struct(">3sBBdB")
_KEY_LENGTH: Final = struct.Struct(">I")
_FLAGS_AT: Final = 4
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


@runtime_checkable
class EntrySigner(Protocol):
    """A serializer whose entries are signed over their key and header (format 2).

    ``dumps_signed(value, context)`` returns bytes that only
    ``loads_signed(data, context)`` with the same ``context`` accepts; a
    mismatch raises :class:`~stackquery.serializers.SignatureError` before
    anything is decoded.
    """

    @property
    def name(self) -> str:
        """The id stored in entries written with this serializer."""
        ...

    def dumps_signed(self, value: Any, context: bytes) -> bytes:
        """Encode ``value`` bound to ``context``."""
        ...

    def loads_signed(self, data: bytes, context: bytes) -> Any:
        """Decode ``data`` if it was bound to ``context``."""
        ...


@attrs.frozen(slots=False)  # a dict, not slots: made in half the time (one per key read)
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
    key: str = "",
) -> bytes:
    """Encode ``value`` and its metadata as one L2 entry.

    With the built-in JSON serializer the entry is UTF-8 JSON text; with a
    signing serializer (an :class:`EntrySigner`) a format 2 binary frame
    bound to ``key``; with any other a binary frame (see the module docstring).

    Args:
        value: the value to store.
        data_updated_at: wall-clock seconds at which ``value`` was fetched.
        serializer: the serializer that encodes ``value`` (already checked by
            :func:`~stackquery.serializers.as_serializer`).
        invalidated: whether the entry is stale by invalidation.
        key: the L2 key the entry is stored under (the client's ``key_prefix``
            and the key's canonical hash); a signed entry is bound to it.

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
            text = orjson.dumps(envelope, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _json_error(value, exc) from None
        check_finite(value, text)
        return text
    if type(serializer) is TypedJsonSerializer:
        # Embedded as written: the tags and checks are the serializer's.
        envelope = {
            "sq": FORMAT_VERSION,
            "s": serializer.name,
            "t": t,
            "i": bool(invalidated),
            "d": orjson.Fragment(serializer.dumps(value)),
        }
        return orjson.dumps(envelope)
    name = serializer.name
    name_bytes = name.encode()
    if len(name_bytes) > 255:
        raise ValueError(f"a serializer's name must be at most 255 bytes: {name!r}")
    flags = _FLAG_INVALIDATED if invalidated else 0
    version = FORMAT_VERSION
    try:
        signer = _signer(serializer)
        if signer is not None:
            version = SIGNED_FORMAT_VERSION
            payload = signer.dumps_signed(value, _signed_context(flags, t, name_bytes, key))
        else:
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
    header = _HEADER.pack(_MAGIC, version, flags, t, len(payload), len(name_bytes))
    return b"".join((header, name_bytes, payload))


def _pack_text(name: str, t: float, invalidated: bool, tree: Any, value: Any) -> bytes:
    """A text entry of a JSON serializer ``name`` holding ``tree`` (what ``value`` became).

    Raises:
        SerializationError: ``tree`` is not JSON (``value`` named in the message).
    """
    envelope = {"sq": FORMAT_VERSION, "s": name, "t": t, "i": bool(invalidated), "d": tree}
    try:
        text = orjson.dumps(envelope, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise _json_error(value, exc, name) from None
    check_finite(tree, text)
    return text


def _signer(serializer: Serializer) -> EntrySigner | None:
    """``serializer`` if it signs entries (a cheap test: ``isinstance`` on a protocol is not)."""
    if hasattr(serializer, "dumps_signed") and hasattr(serializer, "loads_signed"):
        return cast(EntrySigner, serializer)
    return None


def _signed_context(flags: int, t: float, name: bytes, key: str) -> bytes:
    """What a format 2 entry's signature covers besides its payload."""
    key_bytes = key.encode("utf-8", "surrogatepass")
    head = _SIGNED_HEAD.pack(_MAGIC, SIGNED_FORMAT_VERSION, flags, t, len(name))
    return b"".join((head, name, _KEY_LENGTH.pack(len(key_bytes)), key_bytes))


def unpack_entry(
    raw: bytes | bytearray | memoryview | str, serializer: Serializer, *, key: str = ""
) -> StoredEntry:
    """Decode an entry written by :func:`pack_entry` with the same serializer.

    A ``str`` (from a store that returns text) is accepted; only a text-frame
    entry can survive such a store.

    Args:
        raw: the bytes (or text) read from L2.
        serializer: the serializer the entry is expected to have been written with.
        key: the L2 key it was read from; a signed entry must have been
            written for this key.

    Returns:
        The decoded :class:`StoredEntry`.

    Raises:
        CorruptEntryError: ``raw`` is not a stackquery entry, is of another
            format version, is truncated or damaged, was written by another
            serializer, its payload does not decode, or (signed) it was not
            signed for ``key`` and its header, or is a signed entry of format 1.
            Nothing else is raised for any input bytes.
    """
    if isinstance(raw, str) or raw[:1] == b"{":
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _text_parse_error(raw, exc, serializer) from None
        return plain_text_entry(envelope, serializer) or _unpack_text(envelope, serializer)
    head = bytes(raw[:3])
    if head == _MAGIC:
        return _unpack_binary(raw, serializer, key)
    if head and _MAGIC.startswith(head):
        raise _corrupt("truncated", "entry is shorter than its header", serializer)
    if not head:
        raise _corrupt("truncated", "entry is empty", serializer)
    raise _corrupt("foreign", "not a stackquery entry", serializer)


def plain_text_entry(envelope: Any, serializer: Serializer) -> StoredEntry | None:
    """The entry of a decoded text ``envelope`` that is exactly what :func:`pack_entry`
    writes, else ``None`` (then :func:`_unpack_text`'s careful checks name what is wrong).

    Raises:
        CorruptEntryError: a typed JSON value does not decode (see :func:`_typed_value`).
    """
    if type(envelope) is not dict or len(envelope) != 5:
        return None
    try:
        version = envelope["sq"]
        name = envelope["s"]
        t = envelope["t"]
        invalidated = envelope["i"]
        value = envelope["d"]
    except KeyError:
        return None
    if (
        version == FORMAT_VERSION
        and type(version) is int
        and name == serializer.name
        and name in _TEXT_SERIALIZERS
        and type(t) is float
        and t >= 0.0
        and type(invalidated) is bool
    ):
        if type(serializer) is TypedJsonSerializer:
            value = _typed_value(serializer, value)
        return StoredEntry(value, t, invalidated, name)
    return None


def _loads_signed(
    signer: EntrySigner, payload: bytes, flags: int, t: float, name: str, key: str
) -> Any:
    """Check a format 2 payload against its key and header; return the value.

    An invalidated flag set by someone without the secret (the entry was
    signed without it) is honoured: it only makes the entry stale.
    """
    name_bytes = name.encode()
    try:
        return signer.loads_signed(payload, _signed_context(flags, t, name_bytes, key))
    except SignatureError:
        if not flags & _FLAG_INVALIDATED:
            raise
    return signer.loads_signed(payload, _signed_context(0, t, name_bytes, key))


def flag_invalidated(raw: bytes) -> bytes | None:
    """Return the entry ``raw`` with its invalidated flag set, or ``None`` if it is set already.

    Value, time and (for a signed entry) signature are kept, and a binary
    payload is not decoded: a signed entry flagged this way still verifies,
    as invalidated, without the secret.

    Raises:
        CorruptEntryError: ``raw`` is not a well-formed stackquery entry.
    """
    entry = read_envelope(raw)
    if entry.invalidated:
        return None
    if raw[:1] == b"{":  # a text entry: its value is its JSON, whichever JSON wrote it
        return _pack_text(entry.serializer, entry.data_updated_at, True, entry.value, entry.value)
    flags = raw[_FLAGS_AT] | _FLAG_INVALIDATED
    return b"".join((raw[:_FLAGS_AT], bytes((flags,)), raw[_FLAGS_AT + 1 :]))


@attrs.frozen
class _AnySerializer:
    """Stands for whichever serializer wrote a binary entry read by :func:`read_envelope`."""

    name: str = ""

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError("reads envelopes only")

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError("reads envelopes only")


_JSON: Final = JsonSerializer()
_ANY: Final = _AnySerializer()
_TEXT_SERIALIZERS: Final = frozenset({JsonSerializer.name, TypedJsonSerializer.name})
"""The serializers whose entries are text envelopes."""


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


def _unpack_text(envelope: Any, serializer: Serializer, *, opaque: bool = False) -> StoredEntry:
    """Decode a text entry; ``opaque``: any JSON serializer's, its value kept as JSON."""
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
    if name != serializer.name and not opaque:
        raise _corrupt(
            "serializer-mismatch",
            f"written by {name!r}, expected {serializer.name!r}",
            serializer,
            found=name,
        )
    if name not in _TEXT_SERIALIZERS:
        raise _corrupt("malformed", f"a text entry must be json, not {name!r}", serializer, name)
    if t < 0:
        raise _corrupt("malformed", f"data_updated_at is negative: {t!r}", serializer, name)
    value = envelope["d"]
    if isinstance(serializer, TypedJsonSerializer) and not opaque:
        value = _typed_value(serializer, value)
    return StoredEntry(
        value=value, data_updated_at=float(t), invalidated=invalidated, serializer=name
    )


def _typed_value(serializer: TypedJsonSerializer, tree: Any) -> Any:
    """The value a typed JSON entry holds.

    Raises:
        CorruptEntryError: its tags are malformed, name an unregistered type,
            or hold fields the registered class refuses.
    """
    try:
        return serializer.from_json(tree)
    except DeserializationError as exc:
        raise _corrupt(
            "undecodable-payload",
            f"{serializer.name} could not decode the value: {exc}",
            serializer,
            serializer.name,
        ) from exc


def _unpack_binary(
    raw: bytes | bytearray | memoryview, serializer: Serializer, key: str, *, opaque: bool = False
) -> StoredEntry:
    """Decode a binary frame; ``opaque``: any serializer's, its payload kept as bytes."""
    size = len(raw)
    if size < _HEADER.size:
        raise _corrupt("truncated", "entry is shorter than its header", serializer)
    _, version, flags, t, payload_size, name_size = _HEADER.unpack_from(raw)
    signer = _signer(serializer)
    wanted = SIGNED_FORMAT_VERSION if signer is not None else FORMAT_VERSION
    if version != wanted and not (opaque and version == SIGNED_FORMAT_VERSION):
        if signer is not None and version == FORMAT_VERSION:
            detail = "format 1 signed entries are not bound to their key; format 2 is"
        else:
            detail = f"format version {version}, expected {wanted}"
        raise _corrupt("unsupported-version", detail, serializer)
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
    if name != serializer.name and not opaque:
        raise _corrupt(
            "serializer-mismatch",
            f"written by {name!r}, expected {serializer.name!r}",
            serializer,
            found=name,
        )
    payload = bytes(raw[_HEADER.size + name_size :])
    try:
        if opaque:
            value: Any = payload
        elif signer is not None:
            value = _loads_signed(signer, payload, flags, t, name, key)
        else:
            value = serializer.loads(payload)
    except SignatureError as exc:
        raise _corrupt(
            "undecodable-payload",
            "the signature does not cover this key and header",
            serializer,
            name,
        ) from exc
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


def read_envelope(raw: bytes | bytearray | memoryview | str) -> StoredEntry:
    """Decode any stackquery entry's envelope, whichever serializer wrote it.

    A text entry is decoded whole; a binary entry's payload is kept as bytes,
    undecoded and unverified (a signed payload's signature is not checked):
    for showing and flagging entries, never for serving them.

    Raises:
        CorruptEntryError: ``raw`` is not a well-formed stackquery entry.
    """
    if isinstance(raw, str) or raw[:1] == b"{":
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _text_parse_error(raw, exc, _JSON) from None
        return _unpack_text(envelope, _JSON, opaque=True)
    if bytes(raw[:3]) != _MAGIC:
        return unpack_entry(raw, _JSON)  # raises: truncated, or foreign
    return _unpack_binary(raw, _ANY, "", opaque=True)


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
    *,
    key: str = "",
) -> StoredEntry | None:
    """Decode an entry, turning a corrupt one into a miss.

    Args:
        raw: what the store returned; ``None`` (absent) is a miss.
        serializer: the serializer the entry is expected to have been written with.
        on_corrupt: called with the :class:`CorruptEntryError` of a corrupt
            entry (to count and log it); when ``None`` the error is logged at
            WARNING on the ``stackquery.entry`` logger.
        key: the L2 key it was read from (see :func:`unpack_entry`).

    Returns:
        The decoded entry, or ``None`` for a miss or a corrupt entry.

    Raises:
        Exception: whatever ``on_corrupt`` raises; nothing else.
    """
    if raw is None:
        return None
    try:
        return unpack_entry(raw, serializer, key=key)
    except CorruptEntryError as exc:
        if on_corrupt is None:
            _logger.warning("ignoring L2 entry: %s", exc)
        else:
            on_corrupt(exc)
        return None
