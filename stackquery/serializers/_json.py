"""The plain JSON serializer, the default; calling it makes the typed one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, final

import orjson

from ._core import _JSON_OPTIONS, DeserializationError, _json_error, check_finite
from ._typed_json import TypedJsonSerializer


@final
class JsonSerializer:
    """JSON through orjson; the default serializer and the fastest.

    Round-trips ``dict`` (``str`` keys), ``list``, ``str``, ``int`` (64-bit),
    finite ``float``, ``bool`` and ``None``.  Some values change type on the way:

    * tuples come back as lists;
    * ``str``/``int``/``dict``/``list`` subclasses (``IntEnum``, ``OrderedDict``
      ...), ``Enum`` members and ``UUID`` come back as the plain JSON value.

    ``datetime``/``date``/``time``, dataclasses, ``set``, ``bytes``, ints past
    64 bits, non-``str`` dict keys and the floats ``nan``, ``inf`` and
    ``-inf`` (anywhere in the value) raise :class:`SerializationError`:
    each would come back as something else (a ``str``, a ``dict``, ``None``)
    in another process or after a restart.  The non-finite floats are refused
    rather than written in a private tagged form: JSON has no spelling for
    them, and every other reader of the entry (the CLI, another language, a
    text-only store's other users) would see the tag, not the float.  A
    client keeps such a value in L1 and counts it in ``serialize_errors``;
    ``serializers.msgpack`` and ``serializers.pickle`` carry them faithfully.
    The encoded bytes are always UTF-8 text.

    Calling it makes the typed variant: ``serializers.json(types=[User])``
    (see :class:`TypedJsonSerializer`).
    """

    name: Final = "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as UTF-8 JSON.

        Raises:
            SerializationError: the value (or something inside it) is not JSON.
        """
        try:
            encoded = orjson.dumps(value, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _json_error(value, exc) from None
        check_finite(value, encoded)
        return encoded

    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Decode JSON text.

        Raises:
            DeserializationError: ``data`` is not valid UTF-8 JSON.
        """
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DeserializationError(
                f"json cannot decode the data: {exc}", serializer=self.name
            ) from None

    def __call__(self, *, types: Iterable[type] | Mapping[str, type] = ()) -> TypedJsonSerializer:
        """Return a JSON serializer that also round-trips ``types`` and a few standard ones.

        Raises:
            TypeError, ValueError: see :class:`TypedJsonSerializer`.
        """
        return TypedJsonSerializer(types)

    def __repr__(self) -> str:
        return "stackquery.serializers.json"


__all__ = ["JsonSerializer", "TypedJsonSerializer"]
