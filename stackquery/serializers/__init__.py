"""Serializers: how a cached value becomes the bytes of an L2 entry and back.

Users pick one in the client's config::

    sq.QueryClientConfig(serializer=sq.serializers.json)            # the default
    sq.QueryClientConfig(serializer=sq.serializers.json(types=[User, Status]))  # typed JSON
    sq.QueryClientConfig(serializer=sq.serializers.pickle(key=SECRET))
    sq.QueryClientConfig(serializer=sq.serializers.msgpack)           # extra: msgpack
    sq.QueryClientConfig(serializer=sq.serializers.protobuf(User))    # extra: protobuf

or pass any object with ``dumps(value) -> bytes`` and ``loads(bytes)``; the
client runs it through :func:`as_serializer`.  Each serializer has a ``name``
that is stored in every entry it writes, so that an entry written by another
serializer is detected and treated as a miss instead of being misread.

What a serializer cannot encode raises :class:`SerializationError` (a
``TypeError``); bytes it cannot decode raise :class:`DeserializationError` (a
``ValueError``).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._core import (
    DeserializationError,
    SerializationError,
    Serializer,
    SignatureError,
    _check_name,
    _type_name,
)
from ._json import JsonSerializer
from ._typed_json import TypedJsonSerializer

if TYPE_CHECKING:
    from ._binary import (
        MsgpackSerializer,
        PickleSerializer,
        ProtobufSerializer,
        pickle,
        protobuf,
    )

    msgpack: MsgpackSerializer
    """MessagePack; needs ``pip install 'stackquery[msgpack]'``."""

__all__ = [
    "DeserializationError",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "ProtobufSerializer",
    "SerializationError",
    "Serializer",
    "SignatureError",
    "TypedJsonSerializer",
    "as_serializer",
    "json",
    "msgpack",
    "pickle",
    "protobuf",
]


@attrs.frozen
class _NamedSerializer:
    """A user object with ``dumps``/``loads`` but no ``name``, given one."""

    inner: Any
    name: str

    def dumps(self, value: Any) -> bytes:
        data: bytes = self.inner.dumps(value)
        return data

    def loads(self, data: bytes) -> Any:
        return self.inner.loads(data)


def as_serializer(obj: object) -> Serializer:
    """Return ``obj`` as a :class:`Serializer`, checking it once up front.

    Any object with callable ``dumps`` and ``loads`` is accepted.  One without
    a ``name`` is wrapped and named after its class's ``__qualname__`` (a
    module after its ``__name__``).  :data:`msgpack` imports its library here,
    so a missing extra fails when the client is configured, not on first write.

    Args:
        obj: a serializer, or any object with ``dumps(value) -> bytes`` and
            ``loads(bytes)``.

    Returns:
        A serializer: ``obj`` itself when it has a valid ``name``.

    Raises:
        TypeError: ``obj`` lacks callable ``dumps``/``loads``, is a class
            rather than an instance, or has a ``name`` that is not a non-empty str.
        ValueError: ``obj`` is the stdlib ``pickle`` module (unsigned pickle),
            or its name is longer than 255 bytes.
        ImportError: ``obj`` is :data:`msgpack` and msgpack is not installed.
    """
    # Compared with the module only if it was imported: otherwise obj cannot be it.
    if obj is sys.modules.get("pickle"):
        raise ValueError(
            "the pickle module is not a safe serializer: unsigned pickle from a "
            "shared store is remote code execution; use serializers.pickle(key=...)"
        )
    if isinstance(obj, type):
        raise TypeError(f"expected a serializer instance, got the class {obj.__qualname__}")
    missing = [m for m in ("dumps", "loads") if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(
            f"a serializer needs callable dumps and loads; "
            f"{_type_name(obj)} lacks {' and '.join(missing)}"
        )
    binary = sys.modules.get(f"{__name__}._binary")
    if binary is not None and isinstance(obj, binary.MsgpackSerializer):
        obj.module()
    if isinstance(obj, ModuleType):
        return _NamedSerializer(obj, _check_name(obj.__name__))
    name = getattr(obj, "name", None)
    if name is None:
        return _NamedSerializer(obj, _check_name(type(obj).__qualname__))
    _check_name(name)
    return obj  # type: ignore[return-value]  # checked by hand above


#: The default serializer: JSON through orjson.  ``json(types=[...])`` makes a
#: :class:`TypedJsonSerializer` that also brings back those types.
json: Final = JsonSerializer()

_BINARY: Final = frozenset(
    ("MsgpackSerializer", "PickleSerializer", "ProtobufSerializer", "pickle", "protobuf")
)
"""Names from ``_binary``, imported when first named (PEP 562): ``import stackquery``
need not pay for the pickle module."""


def __getattr__(name: str) -> Any:
    if name not in _BINARY and name != "msgpack":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _binary

    # msgpack is made once: serializers.msgpack is one object, as a module constant is.
    value = _binary.MsgpackSerializer() if name == "msgpack" else getattr(_binary, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_BINARY, "msgpack"})
