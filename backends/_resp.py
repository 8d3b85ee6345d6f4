"""RESP2 on the wire: encoding commands and parsing replies incrementally.

Replies are parsed by redis-py's own machinery: ``hiredis.Reader`` when hiredis
is installed, else redis-py's pure-Python RESP2 parser fed from a buffer.  Error
replies become redis-py's exception classes (``ResponseError``,
``NoScriptError``, ``AuthenticationError`` ...), exactly as redis-py raises them.

redis-py is imported by the first reply parser made, not with this module:
importing ``redis`` loads its asyncio client and its OpenTelemetry support
(about 150 ms), which a program that never talks to Redis should not pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, cast

if TYPE_CHECKING:
    from redis.exceptions import RedisError

try:
    import hiredis

    HIREDIS_AVAILABLE = True
except ImportError:  # pragma: no cover - hiredis is an optional speed-up
    HIREDIS_AVAILABLE = False

CommandArg: TypeAlias = str | bytes | bytearray | memoryview | int | float
"""One argument of a command: text is sent as UTF-8, numbers in decimal."""

RedisReply: TypeAlias = "bytes | int | RedisError | list[RedisReply] | None"
"""A parsed reply: bulk and status strings are ``bytes``, nil is ``None``.

An error reply is the exception redis-py would raise for it (a
``redis.exceptions.RedisError``: ``ResponseError``, ``NoScriptError``,
``AuthenticationError`` ...), as an instance, in its place.  It is the only
exception a reply can be, so ``isinstance(reply, Exception)`` tells an error
reply without importing redis-py.
"""


class _NotEnoughData:
    def __repr__(self) -> str:
        return "NOT_ENOUGH_DATA"


NOT_ENOUGH_DATA: Final = _NotEnoughData()
"""What :meth:`ReplyReader.gets` returns while no complete reply is buffered."""


class ReplyReader(Protocol):
    """An incremental RESP2 parser: feed it bytes, take complete replies out."""

    def feed(self, data: bytes | bytearray) -> None:
        """Append bytes received from the server."""
        ...

    def gets(self) -> Any:
        """Return the next complete reply, or ``NOT_ENOUGH_DATA``.

        Raises:
            redis.exceptions.InvalidResponse: the bytes are not RESP2.
        """
        ...


def import_reply_parser() -> None:
    """Import redis-py's parsing machinery now, if it is not yet.

    The first import takes about 150 ms; a client calls this when it is
    made, so that its first connection does not block a running event loop.
    """
    import redis._parsers  # noqa: F401


def new_reply_reader(*, use_hiredis: bool = True) -> ReplyReader:
    """Return a fresh reply parser: hiredis when available and wanted, else pure Python."""
    if use_hiredis and HIREDIS_AVAILABLE:
        from redis._parsers.base import BaseParser
        from redis.exceptions import InvalidResponse

        # hiredis reads from any buffer, bytearray included (its stubs say str | bytes).
        reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=NOT_ENOUGH_DATA,
        )
        return cast(ReplyReader, reader)
    return PythonReplyReader()


def pack_command(args: Sequence[CommandArg]) -> bytes:
    """Encode one command as a RESP2 array of bulk strings.

    Args:
        args: the command name and its arguments.

    Returns:
        The bytes to send.

    Raises:
        ValueError: ``args`` is empty.
        TypeError: an argument is not text, bytes or a number (``bool`` is
            refused: Redis has no booleans and ``True`` would silently become ``1``).
    """
    if not args:
        raise ValueError("a redis command needs at least a command name")
    if HIREDIS_AVAILABLE:
        try:
            packed: bytes = hiredis.pack_command(cast(Any, tuple(args)))
        except TypeError:
            pass  # bytearray, memoryview, or a bad argument: the slow path decides
        else:
            return packed
    return _pack_command_python(args)


def _pack_command_python(args: Sequence[CommandArg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for position, arg in enumerate(args):
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytearray | memoryview):
            data = bytes(arg)
        elif isinstance(arg, bool):
            raise TypeError(f"redis command argument {position} is a bool; send 0/1 or text")
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise TypeError(
                f"redis command argument {position} must be str, bytes, int or float, "
                f"not {type(arg).__name__}"
            )
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


class _NeedMoreData(Exception):
    """Raised inside the parser when the buffer ends mid-reply."""


class _FedBuffer:
    """The buffer interface redis-py's RESP2 parser reads from, fed by us.

    The parser remembers the position before each reply and rewinds to it
    when a read raises, so a reply cut short is parsed again from its start
    once more bytes have been fed.
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._data += data

    def readline(self, timeout: object = None) -> bytes:
        end = self._data.find(b"\r\n", self._pos)
        if end < 0:
            raise _NeedMoreData
        line = bytes(self._data[self._pos : end])
        self._pos = end + 2
        return line

    def read(self, length: int, timeout: object = None) -> bytes:
        end = self._pos + length
        if end + 2 > len(self._data):
            raise _NeedMoreData
        data = bytes(self._data[self._pos : end])
        self._pos = end + 2
        return data

    def close(self) -> None:
        """Nothing to release (redis-py's parser calls this when discarded)."""

    def get_pos(self) -> int:
        return self._pos

    def rewind(self, pos: int) -> None:
        self._pos = pos

    def purge(self) -> None:
        # Compact only now and then: deleting the front after every reply of
        # a large batch would copy the rest of the batch each time.
        if self._pos == len(self._data) or self._pos > 65536:
            del self._data[: self._pos]
            self._pos = 0


class PythonReplyReader:
    """redis-py's pure-Python RESP2 parser behind the ``hiredis.Reader`` interface."""

    def __init__(self) -> None:
        from redis._parsers import _RESP2Parser
        from redis._parsers.encoders import Encoder

        self._buffer = _FedBuffer()
        self._parser = _RESP2Parser(socket_read_size=65536)  # type: ignore[no-untyped-call]
        self._parser._buffer = self._buffer
        self._parser.encoder = Encoder(  # type: ignore[no-untyped-call]
            "utf-8", "strict", decode_responses=False
        )

    def feed(self, data: bytes | bytearray) -> None:
        """Append bytes received from the server."""
        self._buffer.feed(data)

    def gets(self) -> Any:
        """Return the next complete reply, or ``NOT_ENOUGH_DATA``.

        Raises:
            redis.exceptions.InvalidResponse: the bytes are not RESP2.
        """
        try:
            return self._parser.read_response()
        except _NeedMoreData:
            return NOT_ENOUGH_DATA
