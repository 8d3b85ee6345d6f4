"""The on-disk layout of one :class:`~backends.FileStorage` entry.

An entry file is a fixed header, the key as UTF-8, then the value::

    magic "SQFS" | version u8 | flags u8 | expires_at f64 | key length u32 | key | value

little-endian.  ``flags`` bit 0 says whether ``expires_at`` (wall-clock
seconds since the epoch) is set.  The key is kept so that ``delete_prefix``
can find entries by their original key, and so that a read can check the file
it opened belongs to the key it was asked for.
"""

from __future__ import annotations

import struct

import attrs

MAGIC = b"SQFS"
VERSION = 1
_HAS_EXPIRY = 0x01
HEADER = struct.Struct("<4sBBdI")


class CorruptEntryError(ValueError):
    """An entry file does not follow the layout; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"corrupt entry file: {reason}")
        self.reason = reason


@attrs.frozen
class EntryHeader:
    """The header of an entry file, with the key it holds."""

    key: str
    """The original key."""
    deadline: float | None
    """Wall-clock expiry time, or ``None`` for no expiry."""
    value_offset: int
    """Where the value starts in the file."""


def encode_header(key: str, deadline: float | None) -> bytes:
    """Return the header and key bytes that precede the value of an entry."""
    key_bytes = key.encode("utf-8")
    flags = 0 if deadline is None else _HAS_EXPIRY
    return HEADER.pack(MAGIC, VERSION, flags, deadline or 0.0, len(key_bytes)) + key_bytes


def key_length(header: bytes) -> int:
    """Return the key length announced by the fixed-size ``header``.

    Raises:
        CorruptEntryError: ``header`` is short, or has the wrong magic or version.
    """
    if len(header) < HEADER.size:
        raise CorruptEntryError(f"{len(header)} bytes is shorter than the header")
    magic, version, _, _, length = HEADER.unpack_from(header)
    if magic != MAGIC:
        raise CorruptEntryError(f"magic is {magic!r}, not {MAGIC!r}")
    if version != VERSION:
        raise CorruptEntryError(f"version is {version}, not {VERSION}")
    return int(length)


def decode_header(data: bytes) -> EntryHeader:
    """Return the header at the start of ``data`` (a whole file, or its first bytes).

    Raises:
        CorruptEntryError: ``data`` does not start with a complete header and key.
    """
    length = key_length(data)
    _, _, flags, deadline, _ = HEADER.unpack_from(data)
    end = HEADER.size + length
    if len(data) < end:
        raise CorruptEntryError(f"key of {length} bytes runs past the end of the file")
    try:
        key = data[HEADER.size : end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptEntryError(f"key is not UTF-8: {exc}") from None
    return EntryHeader(key, float(deadline) if flags & _HAS_EXPIRY else None, end)
