"""The attach endpoint's wire format: one JSON object per line, each way.

A request is ``{"op": NAME, ...arguments}`` (and an optional ``"id"``, echoed
back); a reply is ``{"ok": true, "result": ...}`` or ``{"ok": false,
"error": {"code": CODE, "message": TEXT}}``.  Lines end with ``\\n``; a
request line is at most :data:`MAX_REQUEST_LINE` bytes.  Query keys travel
in their canonical JSON form: the arrays of ``orjson.dumps(key)``, integral
floats as ints, dict keys sorted.  Both sides (the server in the client and
the command line) use this module.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import orjson
import trio

from .._errors import InvalidKeyError
from .._keys import QueryKey, canonical_key, key_from_hash, prefix_hash

PROTOCOL_VERSION: Final = 1
"""Bumped when a reply changes in a way an older reader would misread."""

MAX_REQUEST_LINE: Final = 64 * 1024
"""Bytes a request line may hold, newline included; a longer one closes the connection."""

_CHUNK = 64 * 1024


class ErrorCode(enum.Enum):
    """Why a request failed (the ``code`` of an error reply)."""

    BAD_REQUEST = "bad_request"
    """Not JSON, not an object, a missing or wrong argument."""
    UNKNOWN_OP = "unknown_op"
    TOO_LONG = "too_long"
    """The request line passed :data:`MAX_REQUEST_LINE`; the connection is closed."""
    BUSY = "busy"
    """Every connection slot is taken; the connection is closed."""
    TIMEOUT = "timeout"
    """No complete request came in time; the connection is closed."""
    CLOSING = "closing"
    """The client is closing."""
    INTERNAL = "internal"
    """The request broke something in the endpoint (a bug; logged)."""


class RequestError(ValueError):
    """A request the endpoint refuses; becomes an error reply.

    Attributes:
        code: the reply's error code.
    """

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


class LineTooLongError(RequestError):
    """More than the line bound arrived without a newline."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request line longer than {limit} bytes", ErrorCode.TOO_LONG)


def encode(message: dict[str, Any]) -> bytes:
    """Return ``message`` as one line of JSON (tuples become arrays).

    Raises:
        TypeError: ``message`` holds something JSON cannot carry.
    """
    try:
        return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"cannot encode a reply: {exc}") from None


def ok_reply(result: Any, request_id: Any = None) -> dict[str, Any]:
    """The reply to a request that went well."""
    reply: dict[str, Any] = {"ok": True, "result": result}
    if request_id is not None:
        reply["id"] = request_id
    return reply


def error_reply(code: ErrorCode, message: str, request_id: Any = None) -> dict[str, Any]:
    """The reply to a request that failed."""
    reply: dict[str, Any] = {"ok": False, "error": {"code": code.value, "message": message}}
    if request_id is not None:
        reply["id"] = request_id
    return reply


def parse_request(line: bytes) -> dict[str, Any]:
    """Decode one request line into its object (``"op"`` checked to be a string).

    Raises:
        RequestError: the line is not a JSON object with a string ``"op"``.
    """
    try:
        request = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError(f"a request is a JSON object, got {type(request).__name__}")
    if not isinstance(request.get("op"), str):
        raise RequestError('a request needs "op", a string')
    return request


def key_from_json(value: Any) -> QueryKey:
    """The query key a JSON array stands for (arrays become tuples, objects stay dicts).

    Raises:
        RequestError: ``value`` is not an array holding a valid query key.
    """
    if not isinstance(value, list):
        raise RequestError(f'a key prefix is a JSON array such as ["user"], got {value!r:.100}')
    key = key_from_hash(orjson.dumps(value).decode())  # arrays become tuples
    try:
        canonical_key(key)
    except InvalidKeyError as exc:
        raise RequestError(f"not a valid query key: {exc}") from None
    return key


def prefix_argument(request: dict[str, Any], *, required: bool) -> tuple[QueryKey, str]:
    """The request's ``"prefix"`` as a key and its hash prefix (``[]``, every key, if absent).

    Raises:
        RequestError: ``"prefix"`` is missing though ``required``, or not a valid key.
    """
    if "prefix" not in request:
        if required:
            raise RequestError('this op needs "prefix", a JSON array such as ["user"] ([]: all)')
        return (), prefix_hash(())
    key = key_from_json(request["prefix"])
    return key, prefix_hash(key)


def int_argument(request: dict[str, Any], name: str, default: int, *, maximum: int) -> int:
    """The request's integer argument ``name`` (``default`` if absent), in ``0..maximum``.

    Raises:
        RequestError: it is not an integer in range.
    """
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise RequestError(f'"{name}" must be an integer from 0 to {maximum}, got {value!r:.100}')
    return value


def number_argument(request: dict[str, Any], name: str, default: float, *, maximum: float) -> float:
    """The request's number argument ``name`` (``default`` if absent), in ``0..maximum``.

    Raises:
        RequestError: it is not a number in range.
    """
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise RequestError(f'"{name}" must be a number from 0 to {maximum:g}, got {value!r:.100}')
    return float(value)


def bool_argument(request: dict[str, Any], name: str, default: bool) -> bool:
    """The request's boolean argument ``name`` (``default`` if absent).

    Raises:
        RequestError: it is not ``true`` or ``false``.
    """
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(f'"{name}" must be true or false, got {value!r:.100}')
    return value


async def receive_line(
    stream: trio.abc.ReceiveStream, buffer: bytearray, limit: int
) -> bytes | None:
    """Return the next line from ``stream`` (without its newline), or ``None`` at its end.

    ``buffer`` carries what was received past the line to the next call.  A
    final line without a newline counts as a line.

    Raises:
        LineTooLongError: ``limit`` bytes came without a newline.
        trio.BrokenResourceError: the connection broke.
    """
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            return line
        if len(buffer) >= limit:
            raise LineTooLongError(limit)
        start = len(buffer)
        chunk = await stream.receive_some(_CHUNK)
        if not chunk:
            if buffer:
                line = bytes(buffer)
                buffer.clear()
                return line
            return None
        buffer += chunk
